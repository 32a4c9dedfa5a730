"""P copies of one registered model, stacked, run with ``functional_call`` under ``vmap``.

Each member is built exactly as :func:`dlsuite.build.build_run` builds a run's model, from its own
seed, so member ``i`` of a population starts from the weights the sequential run with that seed
starts from. Batch normalisation keeps per-member statistics: batch statistics in training, and
running statistics returned as new tensors (the stacked state is never updated in place under
``vmap``) and used in evaluation. Dropout layers take each member's own rate (a stacked buffer) and
draw each member's own masks.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dlsuite.models import apply_init, create_model
from dlsuite.population.grouped import GroupedForward, Unsupported, agrees

Tensors = dict[str, torch.Tensor]


def member_model(
    name: str,
    knobs: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    init: str,
    init_std: float,
    seed: int,
) -> nn.Module:
    """Model ``name`` initialised as the sequential run with ``seed`` initialises it.

    ``build_run`` calls ``L.seed_everything(seed)`` and then builds data, model and init; the data
    module draws from generators of its own, so the model is the first draw from torch's global
    generator seeded with ``seed`` (``tests/test_population.py`` checks this against ``build_run``).
    """
    torch.manual_seed(seed)
    model = create_model(name, input_shape, num_classes, **knobs)
    apply_init(model, init, init_std)
    return model


class MemberDropout(nn.Module):
    """Dropout whose rate is a buffer, so that each member of a stack drops at its own rate.

    Under ``vmap(randomness="different")`` every member draws its own mask. A rate of 0 keeps the
    input exactly, as ``nn.Dropout(0)`` does.
    """

    p: torch.Tensor

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * (torch.rand_like(x) >= self.p) / (1 - self.p)


def _per_member_dropout(template: nn.Module, members: Sequence[nn.Module]) -> Tensors:
    """Swap the template's ``nn.Dropout`` layers for :class:`MemberDropout`; their stacked rates.

    A layer at rate 0 in every member becomes ``nn.Identity`` (what ``nn.Dropout(0)`` computes),
    so that it draws no random numbers.
    """
    rates: Tensors = {}
    for name, module in list(template.named_modules()):
        if not isinstance(module, nn.modules.dropout._DropoutNd):
            continue
        p = torch.tensor([float(m.get_submodule(name).p) for m in members])  # type: ignore[arg-type]
        if type(module) is not nn.Dropout:
            # Channel/alpha dropout keep the template's own rate, which must then be every member's.
            if not bool((p == p[0]).all()):
                raise ValueError(f"{name}: per-member rates of {type(module).__name__} are not supported")
            continue
        parent, _, child = name.rpartition(".")
        if not p.any():
            template.get_submodule(parent).register_module(child, nn.Identity())
            continue
        template.get_submodule(parent).register_module(child, MemberDropout(module.p))
        rates[f"{name}.p"] = p
    return rates


class Stacked:
    """The stacked parameters (leaves, ``requires_grad``) and buffers of P models of one structure.

    ``params[name]`` has shape ``(P, *shape)``; member ``i`` is ``params[name][i]``. The forward runs
    with native grouped operators where the model allows (:mod:`dlsuite.population.grouped`, decided
    at the first call; ``grouped=False`` never), else under ``vmap``.
    """

    def __init__(self, members: Sequence[nn.Module], grouped: bool = True) -> None:
        if not members:
            raise ValueError("a population needs at least one member")
        params, buffers = stack_module_state(list(members))
        self.params: Tensors = params
        self.buffers: Tensors = buffers
        self.size = len(members)
        # The template holds structure only; every tensor is supplied by functional_call.
        self.template = copy.deepcopy(members[0]).to("meta")
        self.buffers.update(_per_member_dropout(self.template, members))
        self._train = vmap(self._one_train, in_dims=(0, 0, 0), randomness="different")
        self._eval = vmap(self._one_eval, in_dims=(0, 0, None), randomness="different")
        self._grouped: GroupedForward | None = None
        self._undecided = grouped
        self.why_vmap = "" if grouped else "grouped=False"
        """Why the forward runs under ``vmap`` (empty while grouped operators run it)."""

    def _use_grouped(self, input_shape: tuple[int, ...]) -> GroupedForward | None:
        """The grouped forward, tried and checked against ``vmap`` at the first call."""
        if self._undecided:
            self._undecided = False
            was = self.template.training
            try:
                grouped = GroupedForward(self.template)
                self.template.eval()
                if agrees(grouped, self._eval, self.params, self.buffers, input_shape):
                    self._grouped = grouped
                else:
                    self.why_vmap = "the grouped forward disagreed with vmap on a probe batch"
            except Unsupported as exc:
                self.why_vmap = str(exc)
            finally:
                self.template.train(was)
        return self._grouped

    def to(self, device: torch.device | str) -> Stacked:
        """Move the stacked state to ``device`` (parameters stay leaves)."""
        self.params = {k: v.detach().to(device).requires_grad_(v.requires_grad) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    def _one_train(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> tuple[torch.Tensor, Tensors]:
        # Batch norm updates its running statistics in place: on fresh copies, which are returned,
        # so the caller's stacked buffers stay untouched (and vmap sees batched tensors only).
        new = {k: v.clone() for k, v in buffers.items()}
        return functional_call(self.template, (params, new), (x,)), new

    def _one_eval(self, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(self.template, (params, buffers), (x,))
        return out

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, Tensors]:
        """Logits ``(P, B, C)`` for per-member batches ``x`` ``(P, B, ...)`` and the new buffers."""
        grouped = self._use_grouped(tuple(x.shape[2:]))
        self.template.train()
        if grouped is not None:
            return grouped(self.params, self.buffers, x)
        out, new = self._train(self.params, self.buffers, x)
        return out, new

    def forward_eval(self, x: torch.Tensor, state: Tensors | None = None) -> torch.Tensor:
        """Logits ``(P, N, C)`` of every member on the same inputs ``x`` ``(N, ...)``; with ``state``
        (stacked parameters and buffers by name, e.g. each member's best epoch) instead of the current ones."""
        grouped = self._use_grouped(tuple(x.shape[1:]))
        self.template.eval()
        params = self.params if state is None else {k: state[k] for k in self.params}
        buffers = self.buffers if state is None else {k: state[k] for k in self.buffers}
        if grouped is not None:
            return grouped(params, buffers, x, shared=True)[0]
        out: torch.Tensor = self._eval(params, buffers, x)
        return out

    def forward_train_probed(
        self, x: torch.Tensor, modules: Sequence[str]
    ) -> tuple[torch.Tensor, Tensors, torch.Tensor]:
        """:meth:`forward_train` that also returns each member's activation statistics ``(P, len(modules))``
        of the named modules (:func:`dlsuite.population.diagnostics.activation_hook`)."""
        from dlsuite.population.diagnostics import activation_hook

        grouped = self._use_grouped(tuple(x.shape[2:]))
        self.template.train()
        if grouped is not None:
            return grouped.probed(self.params, self.buffers, x, modules)

        def one(params: Tensors, buffers: Tensors, xb: torch.Tensor) -> tuple[torch.Tensor, Tensors, torch.Tensor]:
            sinks: list[list[torch.Tensor]] = [[] for _ in modules]
            hooks = [
                self.template.get_submodule(m).register_forward_hook(
                    activation_hook(self.template.get_submodule(m), sink)
                )
                for m, sink in zip(modules, sinks, strict=True)
            ]
            try:
                out, new = self._one_train(params, buffers, xb)
            finally:
                for h in hooks:
                    h.remove()
            # a module called several times in a forward: the mean of its calls, as the callback's sums give
            stats = [torch.stack(sink).mean() if sink else out.new_tensor(float("nan")) for sink in sinks]
            return out, new, torch.stack(stats)

        self.template.train()
        logits, new, stats = vmap(one, in_dims=(0, 0, 0), randomness="different")(self.params, self.buffers, x)
        return logits, new, stats

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at ``index`` (a new, smaller stack; parameters stay leaves)."""
        self.params = {
            k: v.detach()[index.to(v.device)].requires_grad_(v.requires_grad) for k, v in self.params.items()
        }
        self.buffers = {k: v[index.to(v.device)] for k, v in self.buffers.items()}
        self.size = len(index)

    def member_state(self, i: int) -> Tensors:
        """Member ``i``'s parameters and buffers, named as in its ``state_dict``."""
        return {k: v[i].detach() for k, v in {**self.params, **self.buffers}.items()}


def member_losses(logits: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each member ``(P,)`` from logits ``(P, B, C)`` and targets ``(P, B)``.

    ``smoothing`` ``(P,)``: each member's label smoothing, in ``F.cross_entropy``'s form
    ``(1 - eps) * nll + eps * mean over classes of -log p``.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (P, B, C)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)  # (P,)
    if smoothing is None:
        return nll
    eps = smoothing.to(nll.device, nll.dtype)
    return (1 - eps) * nll + eps * (-logp.mean(-1)).mean(1)
