"""Names this suite records in MLflow that more than one module reads: a flat module of constants.

(Started by the issue-15 work with the names it added or newly read elsewhere; the tracking-record
issue gathers the rest here.)
"""

# -- tags ------------------------------------------------------------------------------------------
PROTOCOL_TAG = "dlsuite.protocol"
"""``kfold`` or ``bagging`` on a protocol's parent run (a compare report labels such rows)."""

# -- summary metrics --------------------------------------------------------------------------------
BEST_VAL_ACC = "best_val_acc"
"""Validation accuracy of the best epoch; of a bagging parent, the ensemble's (= ENSEMBLE_VAL_ACC)."""
BEST_VAL_LOSS = "best_val_loss"
"""Lowest validation loss over the epochs (a validation objective to minimise)."""
ENSEMBLE_VAL_ACC = "ensemble_val_acc"
ENSEMBLE_VAL_LOSS = "ensemble_val_loss"
"""A bagged ensemble's accuracy and NLL on the validation split (its averaged softmax)."""
MEMBER_BEST_VAL_ACC_MEAN = "member_best_val_acc_mean"
"""A bagging parent's members' mean best validation accuracy (not the ensemble's)."""
