"""The population's grouped forward (native grouped operators) against ``vmap``: same logits, buffers and gradients."""

from __future__ import annotations

import pytest
import torch

from dlsuite.config import load_config
from dlsuite.population.grouped import _dropout, _Maps
from dlsuite.population.members import member_losses
from dlsuite.population.train import build_population

MODELS = {
    "linear": (["model.name=linear"], (1, 40)),
    "mlp-batch-norm-shortcut": (
        ["model.name=mlp", "model.width=16", "model.norm=batch", "model.shortcut=true"],
        (1, 40),
    ),
    "cnn": (["model.name=mnist1d_cnn", "model.width=8"], (1, 40)),
    "mlp": (["model.name=mlp", "model.width=16"], (1, 40)),
    "cnn-batch-norm": (["model.name=mnist1d_cnn", "model.width=8", "model.norm=batch"], (1, 40)),
    "lenet-2d-pooling": (["model.name=lenet"], (1, 8, 8)),
    "resnet": (["model.name=resnet", "model.depth=1"], (1, 40)),
}


def _population(overrides: list[str], shape: tuple[int, ...], grouped: bool = True):  # type: ignore[no-untyped-def]
    cfgs = [load_config(None, [*overrides, f"seed={s}"]) for s in (3, 4, 5)]
    return build_population(cfgs, shape, 10, grouped=grouped)


@pytest.mark.parametrize("case", sorted(MODELS))
def test_the_grouped_forward_computes_what_vmap_computes(case: str) -> None:
    overrides, shape = MODELS[case]
    st = _population(overrides, shape).stacked
    x = torch.randn(3, 6, *shape, generator=torch.Generator().manual_seed(1))
    y = torch.randint(10, (3, 6), generator=torch.Generator().manual_seed(2))
    logits, buffers = st.forward_train(x)
    assert st._grouped is not None, st.why_vmap  # every population model runs grouped
    member_losses(logits, y).sum().backward()
    grads = {k: p.grad.clone() for k, p in st.params.items() if p.grad is not None}
    for p in st.params.values():
        p.grad = None
    st.template.train()
    want, want_buffers = st._train(st.params, st.buffers, x)  # the vmap path
    member_losses(want, y).sum().backward()
    torch.testing.assert_close(logits, want, rtol=1e-6, atol=1e-6)
    assert buffers.keys() == want_buffers.keys()
    for k in buffers:
        torch.testing.assert_close(buffers[k], want_buffers[k], rtol=1e-6, atol=1e-6, msg=k)
    assert grads.keys() == {k for k, p in st.params.items() if p.grad is not None}
    for k, g in grads.items():
        torch.testing.assert_close(g, st.params[k].grad, rtol=1e-5, atol=1e-7, msg=k)
    # evaluation: every member on the same inputs, running statistics
    xe = torch.randn(7, *shape)
    got = st.forward_eval(xe)
    st.template.eval()
    torch.testing.assert_close(got, st._eval(st.params, st.buffers, xe), rtol=1e-6, atol=1e-6)


def test_a_model_with_a_layer_it_does_not_group_runs_under_vmap_and_says_why() -> None:
    st = _population(["model.name=mlp", "model.width=8", "model.norm=layer"], (1, 40)).stacked
    logits, _ = st.forward_train(torch.randn(3, 4, 1, 40))
    assert logits.shape == (3, 4, 10)
    assert st._grouped is None
    assert "LayerNorm" in st.why_vmap
    off = _population(["model.name=mlp", "model.width=8"], (1, 40), grouped=False).stacked
    off.forward_train(torch.randn(3, 4, 1, 40))
    assert off._grouped is None and off.why_vmap == "grouped=False"


def test_grouped_dropout_drops_at_each_members_own_rate() -> None:
    ones = _Maps(torch.ones(200, 2 * 8, 5))  # 2 members of 8 channels side by side
    out = _dropout(ones, torch.tensor([0.0, 0.5]), training=True, size=2).t
    assert torch.equal(out[:, :8], ones.t[:, :8])  # rate 0 keeps the input exactly
    kept = out[:, 8:]
    assert set(kept.unique().tolist()) == {0.0, 2.0}  # dropped, or scaled by 1 / (1 - p)
    assert abs(float((kept == 0).double().mean()) - 0.5) < 0.02
    assert torch.equal(_dropout(ones, torch.tensor([0.3, 0.5]), training=False, size=2).t, ones.t)


@pytest.mark.parametrize("case", ["cnn", "lenet-2d-pooling", "mlp"])
def test_the_diagnostics_activation_statistics_are_those_the_vmapped_hooks_give(case: str) -> None:
    from dlsuite.population.diagnostics import activation_modules

    overrides, shape = MODELS[case]
    grouped, plain = _population(overrides, shape).stacked, _population(overrides, shape, grouped=False).stacked
    modules = [name for name, _ in activation_modules(grouped.template)]
    assert modules  # ReLU (dead units) or tanh (saturation) layers to probe
    x = 3 * torch.randn(3, 2, *shape, generator=torch.Generator().manual_seed(3))  # dead units, saturated tanh
    logits, _, stats = grouped.forward_train_probed(x, modules)
    want_logits, _, want = plain.forward_train_probed(x, modules)
    assert grouped._grouped is not None and plain._grouped is None
    assert stats.shape == (3, len(modules))
    torch.testing.assert_close(logits, want_logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats, want)
    assert bool((stats > 0).any())  # not all zero: the statistics are really compared
