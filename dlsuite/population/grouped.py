"""A population's forward pass with native grouped operators instead of ``vmap``, where the model allows.

``vmap(functional_call(...))`` runs any model, but for the small models populations are made of its
per-call cost dominates a step on a CPU (and adds kernels on a GPU): on the MNIST-1D CNN a forward of
4 members costs 0.86 ms under ``vmap`` and 0.31 ms with the grouped operators below; a whole step,
backward included, about 30% less (benchmarks/README.md). :class:`GroupedForward` walks the model's
``torch.fx`` graph once and runs it on the P members' activations laid out the way one native call
can take them:

- maps ``(B, C, *S)`` per member are kept side by side in the channels, ``(B, P*C, *S)``: a convolution
  is one convolution with ``groups = P * groups``, batch norm one ``batch_norm`` over ``P*C`` channels
  (each member's own batch and running statistics), pooling and activations act per channel anyway;
- features ``(B, F)`` per member are kept as ``(P, B, F)``: a linear layer is one ``baddbmm``.

A model with anything else (a layer or function not listed here, a channel dropout, a batch norm with
cumulative averaging) is refused at construction with :class:`Unsupported`, and the population uses
``vmap``; so is one whose grouped output differs from ``vmap``'s on a probe input. Every parameter and
buffer is read from the stacked dicts on each call, so autograd and the optimiser see the same leaves.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from dlsuite.techniques.diagnostics import saturated

Tensors = dict[str, torch.Tensor]

_ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU, nn.Hardswish, nn.ReLU6, nn.Mish,
)  # fmt: skip
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip


class Unsupported(Exception):
    """The model has a part the grouped forward does not run (the message names it)."""


@dataclass
class _Maps:
    """P members' maps side by side in the channels: ``(B, P*C, *S)``."""

    t: torch.Tensor


@dataclass
class _Features:
    """P members' 2-D activations: ``(P, B, F)``."""

    t: torch.Tensor


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # MemberDropout (a rate per member) is a layer here, not code to trace into.
        return type(m).__name__ == "MemberDropout" or super().is_leaf_module(m, qualname)


class GroupedForward:
    """The stacked forward of ``template`` (a structure-only module, e.g. on the meta device) for P members."""

    def __init__(self, template: nn.Module) -> None:
        self.template = template
        try:
            self.graph = _Tracer().trace(template)
        except Exception as exc:
            raise Unsupported(f"not traceable by torch.fx: {exc}") from exc
        self.modules = dict(template.named_modules())
        for node in self.graph.nodes:
            if node.op == "call_module":
                self._check_module(node.target, self.modules[node.target])
            elif node.op == "call_function" and node.target not in _FUNCTIONS:
                raise Unsupported(f"function {getattr(node.target, '__name__', node.target)} in the forward")
            elif node.op in ("call_method", "get_attr"):
                raise Unsupported(f"{node.op} {node.target} in the forward")

    @staticmethod
    def _check_module(name: str, m: nn.Module) -> None:
        if isinstance(m, nn.modules.conv._ConvNd) and m.padding_mode != "zeros":
            raise Unsupported(f"{name}: padding_mode {m.padding_mode!r}")
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None and m.track_running_stats:
            raise Unsupported(f"{name}: batch norm with cumulative averaging (momentum=None)")
        if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
            raise Unsupported(f"{name}: Flatten({m.start_dim}, {m.end_dim})")
        known = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, nn.Identity)
        if not isinstance(m, known + _ELEMENTWISE + _POOLS) and type(m).__name__ != "MemberDropout":
            raise Unsupported(f"{name}: {type(m).__name__} layers are not grouped")

    def __call__(self, params: Tensors, buffers: Tensors, x: torch.Tensor, shared: bool = False) -> tuple[Any, Tensors]:
        """Logits ``(P, B, classes)`` and the buffers after the call (batch norm's running statistics
        updated in training, on new tensors). ``x``: ``(P, B, ...)``, one batch per member, or with
        ``shared`` ``(B, ...)``, the same inputs for every member."""
        out, new, _ = self.probed(params, buffers, x, (), shared)
        return out, new

    def probed(
        self, params: Tensors, buffers: Tensors, x: torch.Tensor, modules: Sequence[str], shared: bool = False
    ) -> tuple[torch.Tensor, Tensors, torch.Tensor]:
        """:meth:`__call__` that also returns each member's activation statistic ``(P, len(modules))`` of
        the named ReLU/sigmoid/tanh modules, as :func:`dlsuite.population.diagnostics.activation_hook`
        computes it for one member (the mean over the calls of a module called more than once)."""
        size = next(iter(params.values())).shape[0]
        new = dict(buffers)
        sinks: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
        env: dict[fx.Node, Any] = {}
        out: Any = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                env[node] = _Maps(_side_by_side(x, size, shared))
            elif node.op == "call_module":
                arg = env[node.args[0]]
                m = self.modules[node.target]
                env[node] = self._module(node.target, m, arg, params, new, size)
                if node.target in sinks:
                    sinks[node.target].append(_activation_statistic(m, env[node], size))
            elif node.op == "call_function":
                args = [env[a] if isinstance(a, fx.Node) else a for a in node.args]
                env[node] = _FUNCTIONS[node.target](*args)
            elif node.op == "output":
                out = env[node.args[0]]
        if not isinstance(out, _Features):
            raise Unsupported("the model's output is not (B, classes) per member")
        nan = out.t.new_full((size,), float("nan"))
        stats = [torch.stack(sinks[m]).mean(0) if sinks[m] else nan for m in modules]
        return out.t, new, torch.stack(stats, 1) if stats else out.t.new_zeros(size, 0)

    def _module(self, name: str, m: nn.Module, h: Any, params: Tensors, buffers: Tensors, size: int) -> Any:
        p = f"{name}." if name else ""
        if isinstance(m, nn.Identity):
            return h
        if isinstance(m, _ELEMENTWISE):
            return type(h)(m(h.t))
        if isinstance(m, nn.Flatten):
            return _features(h, size)
        if isinstance(m, nn.Linear):
            if isinstance(h, _Maps) and h.t.dim() > 2:
                raise Unsupported(f"{name}: a linear layer on maps (its last dimension)")
            f, w, b = _features(h, size).t, params[p + "weight"], params.get(p + "bias")
            wt = w.transpose(1, 2)
            return _Features(torch.bmm(f, wt) if b is None else torch.baddbmm(b.unsqueeze(1), f, wt))
        if type(m).__name__ == "MemberDropout":
            return _dropout(h, buffers[p + "p"], m.training, size)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return _batch_norm(m, p, h, params, buffers, size)
        if not isinstance(h, _Maps):
            raise Unsupported(f"{name}: {type(m).__name__} on features")
        if isinstance(m, _POOLS):
            return _Maps(m(h.t))
        assert isinstance(m, nn.Conv1d | nn.Conv2d)
        w, b = params[p + "weight"], params.get(p + "bias")
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        bias = None if b is None else b.reshape(-1)
        return _Maps(conv(h.t, w.flatten(0, 1), bias, m.stride, m.padding, m.dilation, m.groups * size))  # type: ignore[arg-type]


def _side_by_side(x: torch.Tensor, size: int, shared: bool) -> torch.Tensor:
    """``(P, B, C, *S)`` (or shared ``(B, C, *S)``) as ``(B, P*C, *S)``."""
    if shared:
        return x.repeat(1, size, *([1] * (x.dim() - 2)))
    return x.transpose(0, 1).flatten(1, 2)


def _features(h: Any, size: int) -> _Features:
    """Flatten each member's activation to ``(P, B, F)``."""
    if isinstance(h, _Features):
        return h
    t = h.t
    return _Features(t.reshape(t.shape[0], size, -1).transpose(0, 1))


def _dropout(h: Any, rate: torch.Tensor, training: bool, size: int) -> Any:
    """Each member's dropout at its own rate; every element draws its own mask."""
    if not training:
        return h
    if isinstance(h, _Maps):
        per = h.t.shape[1] // size  # channels of one member
        r = rate.repeat_interleave(per).view(1, -1, *([1] * (h.t.dim() - 2)))
    else:
        r = rate.view(-1, 1, 1)
    return type(h)(h.t * (torch.rand_like(h.t) >= r) / (1 - r))


def _batch_norm(m: Any, p: str, h: Any, params: Tensors, buffers: Tensors, size: int) -> Any:
    """Batch norm over each member's own batch (training) or running statistics (evaluation)."""
    t = h.t if isinstance(h, _Maps) else h.t.transpose(0, 1).flatten(1)  # (B, P*C, ...)
    weight, bias = params.get(p + "weight"), params.get(p + "bias")
    mean, var = buffers.get(p + "running_mean"), buffers.get(p + "running_var")
    use_batch = m.training or mean is None
    if m.training and mean is not None and var is not None:
        # updated in place by batch_norm: on copies, returned as the new buffers (stacked ones stay as they are)
        mean, var = mean.flatten().clone(), var.flatten().clone()
        buffers[p + "running_mean"], buffers[p + "running_var"] = mean.view(size, -1), var.view(size, -1)
        buffers[p + "num_batches_tracked"] = buffers[p + "num_batches_tracked"] + 1
    elif mean is not None and var is not None:
        mean, var = mean.flatten(), var.flatten()
    out = F.batch_norm(t, mean, var, None, None, use_batch, m.momentum if m.momentum is not None else 0.0, m.eps)
    if weight is not None and bias is not None:
        # the affine part apart, as vmap's batch rule computes it (fused, rounding differs)
        shape = (1, -1, *([1] * (t.dim() - 2)))
        out = out * weight.flatten().view(shape) + bias.flatten().view(shape)
    if isinstance(h, _Maps):
        return _Maps(out)
    return _Features(out.view(out.shape[0], size, -1).transpose(0, 1))


def _activation_statistic(m: nn.Module, h: Any, size: int) -> torch.Tensor:
    """Each member's ``(P,)`` share of dead ReLU units (channels or features never positive in the batch),
    or of saturated sigmoid/tanh outputs."""
    t = h.t.detach()
    if isinstance(m, nn.ReLU):
        if isinstance(h, _Maps):  # a unit is a channel: (B, P*C, *S) -> (P, C)
            alive = (t > 0).transpose(0, 1).reshape(t.shape[1], -1).any(1).view(size, -1)
        else:  # a unit is a feature: (P, B, F) -> (P, F)
            alive = (t > 0).any(1)
        return 1.0 - alive.float().mean(1)
    hit = saturated(m, t)
    per_member = hit.transpose(0, 1).reshape(size, -1) if isinstance(h, _Maps) else hit.reshape(size, -1)
    return per_member.float().mean(1)


def _add(a: Any, b: Any) -> Any:
    if type(a) is not type(b):
        raise Unsupported("a sum of maps and features")
    return type(a)(a.t + b.t)


_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {operator.add: _add}
"""``call_function`` nodes the grouped forward runs (residual sums)."""


def agrees(
    grouped: GroupedForward,
    vmapped: Callable[..., torch.Tensor],
    params: Tensors,
    buffers: Tensors,
    input_shape: tuple[int, ...],
) -> bool:
    """Whether ``grouped`` gives ``vmapped``'s evaluation logits on a probe batch (a last check that
    every part of the model was understood: a misread layer is off by far more than the 1e-3 allowed,
    which leaves room for TF32 and other reduced-precision kernels on a GPU)."""
    probe = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(0)).to(next(iter(params.values())))
    with torch.no_grad(), torch.autocast(probe.device.type, enabled=False):  # in float32, whatever the caller's
        want = vmapped(params, buffers, probe)
        got, _ = grouped(params, buffers, probe, shared=True)
    scale = want.abs().max().clamp(min=1.0)
    return got.shape == want.shape and bool(((got - want).abs().max() <= 1e-3 * scale).item()) and math.isfinite(scale)
