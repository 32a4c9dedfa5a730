"""Populations: P same-structure runs trained at once, one vectorised step for all members.

Members share the model's structure (family and every shape knob), the data and the batch size; they
differ in seed (initial weights, batch order, dropout masks) and in their optimiser coefficients.
``members`` stacks the models (``torch.func``), ``optim`` updates them with per-member coefficients,
``schedule`` gives each member its own learning rate per step and ``train`` runs the loop.
"""
