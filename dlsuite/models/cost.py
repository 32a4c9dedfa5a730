"""What a model costs: parameters, FLOPs per example, and for conv stacks receptive field and sizes.

Logged with every run (``model.*`` params; the numbers also as metrics) so that architectures can be
compared on cost as well as accuracy in the MLflow UI.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of one example
(a multiply-add counts 2; matmuls and convolutions, which dominate, are counted; elementwise ops
are not). Receptive field and output sizes are traced on the same pass: every conv / pool layer
maps its input size N to ``floor((N + 2P - D(F - 1) - 1) / S) + 1`` (the notes' ``(N + 2P - F) / S + 1``
with dilation D), and the receptive field grows by ``(F - 1) * D * J``, where J is the product of
the strides before the layer (the "jump" between neighbouring outputs in input positions).
Operations that mix all positions (linear layers, global pooling, attention, recurrence) end the
receptive field's growth; models with attention or recurrence report none.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from dlsuite.models.api import count_params

_CONV = (nn.Conv1d, nn.Conv2d)
_TCONV = (nn.ConvTranspose1d, nn.ConvTranspose2d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_GLOBAL = (nn.Linear, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_NOT_CONV_STACK = (nn.RNNBase, nn.RNNCellBase, nn.MultiheadAttention)
_TAG = "_dlsuite_rf"  # (receptive field per dim, jump per dim, global?) stored on traced tensors


def _pair(v: Any, dims: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple | list) else (int(v),) * dims


class _Propagate(TorchFunctionMode):
    """Carries the receptive-field tag through every torch op: an output inherits the widest input's.

    Residual additions, concatenations and activations thus pass the tag on; conv / pool layers
    overwrite it with their own rule in a forward hook.
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        tags = [getattr(t, _TAG) for t in _tensors((args, kwargs)) if hasattr(t, _TAG)]
        if tags:
            # Prefer the local (conv-path) tag: a squeeze-and-excitation gate is global, but the
            # receptive field users compare is that of the convolutions it scales.
            best = max(tags, key=lambda t: (not t[2], max(t[0])))
            for t in _tensors(out):
                if not hasattr(t, _TAG):
                    setattr(t, _TAG, best)
        return out


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, tuple | list):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def trace_conv_stack(model: nn.Module, example: torch.Tensor) -> list[dict[str, Any]]:
    """Per conv / pool layer, in execution order: name, kernel, stride, padding, input and output
    sizes, and the receptive field (in input positions) of one output, for one example ``(1, C, *S)``."""
    dims = example.dim() - 2
    rows: list[dict[str, Any]] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0]
        rf, jump, is_global = getattr(x, _TAG, ((1,) * dims, (1,) * dims, False))
        if isinstance(module, _GLOBAL):
            setattr(output, _TAG, (rf, jump, True))
            return
        m: Any = module
        k = _pair(m.kernel_size, dims)
        s = _pair(m.stride if m.stride is not None else m.kernel_size, dims)
        d = _pair(getattr(m, "dilation", 1), dims)
        pad = m.padding
        if isinstance(pad, str):  # "same" / "valid"
            pad = tuple((d_ * (k_ - 1)) // 2 if pad == "same" else 0 for k_, d_ in zip(k, d))
        p = _pair(pad, dims)
        if isinstance(module, _TCONV):
            jump_out = tuple(j / s_ for j, s_ in zip(jump, s))
            rf_out = tuple(r + (k_ - 1) * d_ * j for r, k_, d_, j in zip(rf, k, d, jump_out))
        else:
            jump_out = tuple(j * s_ for j, s_ in zip(jump, s))
            rf_out = tuple(r + (k_ - 1) * d_ * j for r, k_, d_, j in zip(rf, k, d, jump))
        if is_global:  # after a global op the receptive field is the whole input already
            rf_out, jump_out = rf, jump
        setattr(output, _TAG, (rf_out, jump_out, is_global))
        rows.append(
            {
                "layer": names.get(module, type(module).__name__),
                "type": type(module).__name__,
                "kernel": k,
                "stride": s,
                "padding": p,
                "in_size": tuple(x.shape[2:]),
                "out_size": tuple(output.shape[2:]),
                "receptive_field": rf_out,
                "after_global": is_global,
            }
        )

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _CONV + _TCONV + _POOL + _GLOBAL)
    ]
    try:
        with torch.no_grad(), _Propagate():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return rows


@contextlib.contextmanager
def _reference_kernels() -> Iterator[None]:
    """Route RNNs and attention through plain matmuls, which the FLOP counter sees: oneDNN / cuDNN
    fused RNN kernels and the Transformer inference fast path are invisible to it (an LSTM
    counted 1,280 FLOPs instead of 1.3 M)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # oneDNN's note about Intel GPUs when toggled
            with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(enabled=False):
                yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _size(s: tuple[Any, ...]) -> str:
    return "x".join(f"{v:g}" for v in s)


def model_cost(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Flat ``model.*`` facts for one example ``(1, *input_shape)`` (a batch of one from the data).

    Always ``model.num_params``, ``model.num_trainable_params`` and ``model.flops_per_example``; for
    conv stacks also ``model.receptive_field`` (largest over dimensions), ``model.output_sizes``
    (input size, then each conv / pool layer's output), ``model.feature_size`` and ``model.conv_layers``.
    """
    was_training = model.training
    model.eval()  # batch norm keeps its statistics; dropout off; a batch of one is fine
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), _reference_kernels(), counter:
            model(example)
        facts: dict[str, Any] = {
            "model.num_params": count_params(model),
            "model.num_trainable_params": count_params(model, trainable_only=True),
            "model.flops_per_example": int(counter.get_total_flops()) // len(example),
        }
        is_conv = any(isinstance(m, _CONV) for m in model.modules())
        if is_conv and example.is_floating_point() and not any(isinstance(m, _NOT_CONV_STACK) for m in model.modules()):
            try:
                rows = trace_conv_stack(model, example[:1])
            except (RuntimeError, TypeError, AttributeError):  # pragma: no cover
                # A facts-only trace must never fail a run: models from other libraries may use
                # tensor subclasses that refuse the tag, or conv wrappers without kernel attributes.
                rows = []
            local = [r for r in rows if not r["after_global"]]
            if local:
                rf = local[-1]["receptive_field"]
                facts["model.receptive_field"] = max(round(v) for v in rf)
                facts["model.feature_size"] = _size(local[-1]["out_size"])
            if rows:
                facts["model.output_sizes"] = " > ".join(
                    [_size(tuple(example.shape[2:]))] + [_size(r["out_size"]) for r in rows]
                )
                facts["model.conv_layers"] = sum(r["type"].startswith("Conv") for r in rows)
    finally:
        model.train(was_training)
    return facts


# The numeric facts of model_cost, i.e. the metric names cost_metrics can return.
COST_METRICS = ("num_params", "num_trainable_params", "flops_per_example", "receptive_field", "conv_layers")


def cost_metrics(facts: dict[str, Any]) -> dict[str, float]:
    """The numeric facts, without the ``model.`` prefix, for logging as MLflow metrics."""
    return {
        k.removeprefix("model."): float(v)
        for k, v in facts.items()
        if k.startswith("model.") and isinstance(v, int | float) and not isinstance(v, bool)
    }
