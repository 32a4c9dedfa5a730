"""A population reproduces its members' sequential runs: same initial weights, same batch order, same
updates (``torch.optim`` and dlsuite's schedules), hence the same per-epoch losses and final weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from dlsuite.build import build_run
from dlsuite.config import RunConfig
from dlsuite.data import create_datamodule
from dlsuite.data.base import TensorBatches
from dlsuite.models import apply_init, create_model
from dlsuite.population.group import plan
from dlsuite.population.members import Stacked, member_model
from dlsuite.population.train import build_population, fit
from dlsuite.techniques.losses import create_loss
from dlsuite.techniques.optim import create_optimizer, create_scheduler
from dlsuite.techniques.regularizers import penalized_weights, weight_penalty
from tests.conftest import tiny_config

EPOCHS = 2  # tiny_config trains 2 epochs
# Float32 rounding differs between the stacked (batched matmul, grouped convolution) and the
# per-model kernels; after 12 steps the largest difference seen here was 9e-7 (loss) and 8e-7 (weight).
RTOL = ATOL = 1e-5

Split = tuple[torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def data(data_cache: Path) -> Iterator[dict[str, tuple[Split, Split]]]:
    """Training (300 examples) and validation splits of MNIST-1D and digits, as tensors (CPU is the device)."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLSUITE_DATA", str(data_cache))
        for name in ("mnist1d", "digits"):
            dm = create_datamodule(tiny_config(f"data.name={name}").data, 0)
            dm.prepare()
            out[name] = (dm.splits["train"], dm.splits["val"])
    yield out


def clip(model: nn.Module, cfg: RunConfig) -> None:
    """Gradient clipping as Lightning applies ``gradient_clip_val`` / ``gradient_clip_algorithm``."""
    if cfg.optim.grad_clip is None:
        return
    if cfg.optim.grad_clip_method == "norm":
        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    else:
        nn.utils.clip_grad_value_(model.parameters(), cfg.optim.grad_clip)


def sequential(
    cfg: RunConfig, train: Split, val: Split, accuracy: list[float] | None = None
) -> tuple[list[float], list[float], nn.Module]:
    """One member alone in plain PyTorch: the suite's model, torch.optim, its schedule and batch order.

    Returns per-epoch training and validation losses and the model; per-epoch validation accuracies
    go to ``accuracy`` when given.
    """
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, tuple(train[0].shape[1:]), 10, **cfg.model.knobs)
    apply_init(model, cfg.model.init, cfg.model.init_std)
    opt = create_optimizer(model, cfg.optim)
    loss_fn = create_loss(cfg)  # cross-entropy with the run's label smoothing
    batches = TensorBatches(train, cfg.data.batch_size, shuffle=True, seed=cfg.seed)
    spec = create_scheduler(opt, cfg.optim.schedule, cfg.trainer.max_epochs, len(batches))
    sched, per_step = spec["scheduler"], spec["interval"] == "step"  # as Lightning steps it
    train_loss, val_loss = [], []
    for _ in range(cfg.trainer.max_epochs):
        model.train()
        total = 0.0
        for xb, yb in batches:
            loss = loss_fn(model(xb), yb)
            r = cfg.regularization
            penalty = weight_penalty(penalized_weights(model), r.l1, r.l2) if r.l1 or r.l2 else 0.0
            opt.zero_grad()
            (loss + penalty).backward()
            clip(model, cfg)
            opt.step()
            if per_step:
                sched.step()
            total += float(loss.detach()) * len(yb)
        if not per_step:
            sched.step()
        train_loss.append(total / len(train[0]))
        model.eval()
        with torch.no_grad():
            logits = model(val[0])
            val_loss.append(float(loss_fn(logits, val[1])))
            if accuracy is not None:
                accuracy.append(float((logits.argmax(1) == val[1]).double().mean()))
    return train_loss, val_loss, model


SMOOTH_CLIP = ["regularization.label_smoothing=0.1", "optim.grad_clip=0.5"]
STEP = ["optim.schedule.name=step", "optim.schedule.step_size=1"]
CASES = {
    "mlp-sgd-momentum": (
        ["model.name=mlp", "model.width=16", "optim.name=sgd", "optim.momentum=0.9", "optim.schedule.name=cosine"],
        [["optim.lr=0.05"], ["optim.lr=0.1", "optim.nesterov=true"], ["optim.lr=0.02", "optim.weight_decay=0.01"]],
    ),
    "mlp-adam-step": (
        ["model.name=mlp", "model.width=16", "optim.name=adam", *STEP],
        [
            ["optim.lr=0.01"],
            ["optim.lr=0.003", "optim.weight_decay=1e-3"],
            ["optim.lr=0.02", "optim.betas=[0.8,0.99]", *SMOOTH_CLIP],
        ],
    ),
    "cnn-adamw-warmup": (
        ["optim.name=adamw", "optim.schedule.name=cosine", "optim.schedule.warmup_epochs=1"],
        [
            ["optim.lr=0.01", "optim.weight_decay=0.05"],
            ["optim.lr=3e-3", "regularization.l2=1e-3"],
            ["optim.lr=5e-3", "optim.weight_decay=0.1", "regularization.l1=1e-4", "regularization.l2=1e-4"],
        ],
    ),
    "cnn-sgd-batchnorm": (
        ["model.norm=batch", "optim.name=sgd", "optim.momentum=0.9", "optim.decay_norm_and_bias=true"],
        [["optim.lr=0.05", "optim.weight_decay=0.001"], ["optim.lr=0.1"], ["optim.lr=0.02", "optim.momentum=0.5"]],
    ),
    "mlp-adamw-onecycle": (
        ["model.name=mlp", "model.width=16", "optim.name=adamw", "optim.schedule.name=onecycle"],
        [["optim.lr=0.01", "optim.weight_decay=0.05"], ["optim.lr=0.03"]],
    ),
    # A 2-D convnet with pooling, on 8x8 digits
    "lenet-digits-sgd": (
        ["data.name=digits", "model.name=lenet", "optim.name=sgd", "optim.momentum=0.9"],
        [["optim.lr=0.05"], ["optim.lr=0.02", "optim.weight_decay=0.01"]],
    ),
    # Residual blocks with batch norm throughout (their convolutions have no bias). With Adam, a
    # bias right before batch norm (cnn norm=batch) has a true gradient of 0, and Adam scales its
    # rounding noise up to full steps: such biases drift apart between any two implementations.
    "resnet-sgd-momentum": (
        ["model.name=resnet", "model.depth=1", "optim.name=sgd", "optim.momentum=0.9"],
        [["optim.lr=0.05"], ["optim.lr=0.02", "optim.nesterov=true", "optim.weight_decay=1e-3"]],
    ),
    # Per-member label smoothing and gradient clipping (norm, value); 0 and unset in a member mean none
    "mlp-clip-norm-smoothing": (
        ["model.name=mlp", "model.width=16", "optim.name=sgd", "optim.momentum=0.9"],
        [
            ["optim.lr=0.1", "optim.grad_clip=0.5", "regularization.label_smoothing=0.1"],
            ["optim.lr=0.05"],
            ["optim.lr=0.2", "optim.grad_clip=0.2"],
        ],
    ),
    # (Adam with clipping by value amplifies rounding differences step after step: 1e-3 apart after
    # 12 steps here, growing from 1e-7 after the first; SGD keeps them at rounding level.)
    "cnn-sgd-clip-value": (
        ["optim.name=sgd", "optim.momentum=0.9", "optim.grad_clip_method=value"],
        [
            ["optim.lr=0.05", "optim.grad_clip=0.01", "regularization.l1=1e-4"],
            ["optim.lr=0.02", "regularization.label_smoothing=0.2"],
        ],
    ),
    "linear-sgd": (
        ["model.name=linear", "optim.name=sgd"],
        [["optim.lr=0.1"], ["optim.lr=0.3"]],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_population_matches_members_trained_one_by_one(case: str, data: dict[str, tuple[Split, Split]]) -> None:
    shared, members = CASES[case]
    cfgs = [tiny_config(*shared, *extra, f"seed={10 + i}") for i, extra in enumerate(members)]
    train, val = data[cfgs[0].data.name]
    pop = build_population(cfgs, tuple(train[0].shape[1:]), 10)
    hist = fit(pop, train, val, epochs=EPOCHS)
    for i, cfg in enumerate(cfgs):
        train_loss, val_loss, model = sequential(cfg, train, val)
        got_train = [epoch[i] for epoch in hist.train_loss]
        got_val = [epoch[i] for epoch in hist.val_loss]
        torch.testing.assert_close(torch.tensor(got_train), torch.tensor(train_loss), rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(torch.tensor(got_val), torch.tensor(val_loss), rtol=RTOL, atol=ATOL)
        state = pop.stacked.member_state(i)
        for name, ref in model.state_dict().items():
            torch.testing.assert_close(
                state[name], ref, rtol=RTOL, atol=ATOL, msg=lambda m, n=name, i=i: f"member {i} {n}: {m}"
            )
    # the members really differ (different seeds and rates), so the comparison above is not vacuous
    assert len({round(epoch, 6) for epoch in hist.train_loss[-1]}) == len(cfgs)


def test_members_start_from_the_weights_build_run_gives(store: str) -> None:
    for overrides in (["model.name=mlp", "model.norm=batch"], ["model.width=8"]):
        cfg = tiny_config(*overrides, "seed=7")
        parts = build_run(cfg)
        m = cfg.model
        member = member_model(m.name, dict(m.knobs), parts.data.input_shape, 10, m.init, m.init_std, cfg.seed)
        for name, ref in parts.model.state_dict().items():
            assert torch.equal(member.state_dict()[name], ref), name


def test_training_forward_leaves_the_stacked_buffers_untouched() -> None:
    models = [member_model("mlp", {"norm": "batch", "width": 8}, (1, 40), 10, "default", 0.02, s) for s in (0, 1)]
    stacked = Stacked(models)
    before = {k: v.clone() for k, v in stacked.buffers.items()}
    _, new = stacked.forward_train(torch.randn(2, 16, 1, 40))
    assert all(torch.equal(stacked.buffers[k], before[k]) for k in before)
    assert not torch.equal(new["blocks.0.1.running_mean"], before["blocks.0.1.running_mean"])
    # each member's running statistics come from its own batch
    assert not torch.equal(new["blocks.0.1.running_mean"][0], new["blocks.0.1.running_mean"][1])


def test_each_member_drops_out_at_its_own_rate_with_its_own_masks() -> None:
    rates = (0.0, 0.5, 0.5)
    models = [member_model("mlp", {"dropout": p, "width": 64}, (1, 40), 10, "default", 0.02, 0) for p in rates]
    stacked = Stacked(models)
    x = torch.randn(16, 1, 40)
    train_out, _ = stacked.forward_train(x.expand(3, -1, -1, -1))
    eval_out = stacked.forward_eval(x)
    torch.testing.assert_close(train_out[0], eval_out[0])  # rate 0: the input passes untouched
    assert not torch.allclose(train_out[1], eval_out[1])
    # same seed, same rate, same input: only the masks differ between members 1 and 2
    torch.testing.assert_close(eval_out[1], eval_out[2])
    assert not torch.allclose(train_out[1], train_out[2])


def test_with_dropout_on_the_population_agrees_with_sequential_runs_over_seeds(
    data: dict[str, tuple[Split, Split]],
) -> None:
    """Masks differ (each member draws its own), so runs agree only in distribution: over 8 seeds the
    mean final training and validation losses of both ways agree (Welch's t-test)."""
    from scipy import stats

    train, val = data["mnist1d"]
    shared = ["model.name=mlp", "model.width=32", "model.dropout=0.5", "optim.name=sgd", "optim.lr=0.1"]
    cfgs = [tiny_config(*shared, "optim.momentum=0.9", f"seed={s}") for s in range(8)]
    hist = fit(build_population(cfgs, tuple(train[0].shape[1:]), 10), train, val, epochs=EPOCHS)
    runs = [sequential(cfg, train, val) for cfg in cfgs]
    for got, want in ((hist.train_loss[-1], [r[0][-1] for r in runs]), (hist.val_loss[-1], [r[1][-1] for r in runs])):
        assert stats.ttest_ind(got, want, equal_var=False).pvalue > 0.01, (got, want)
    # and dropout is really on: the same members without it train to other losses
    plain = [c.model_copy(update={"model": c.model.model_copy(update={"dropout": 0.0})}) for c in cfgs]
    no_dropout = fit(build_population(plain, tuple(train[0].shape[1:]), 10), train, val, epochs=EPOCHS)
    assert all(abs(a - b) > 1e-4 for a, b in zip(no_dropout.train_loss[-1], hist.train_loss[-1], strict=True))


def test_a_bf16_mixed_population_trains_each_member_as_its_bf16_mixed_run(
    data: dict[str, tuple[Split, Split]],
) -> None:
    # Lightning's bf16-mixed: forward and loss under bfloat16 autocast, float32 weights and optimiser.
    shared = ["optim.name=sgd", "optim.momentum=0.9", "trainer.precision=bf16-mixed"]
    cfgs = [tiny_config(*shared, f"optim.lr={lr}", f"seed={20 + i}") for i, lr in enumerate((0.05, 0.02))]
    assert [g.runner for g in plan(cfgs)] == ["population"]
    train, val = data[cfgs[0].data.name]
    pop = build_population(cfgs, tuple(train[0].shape[1:]), 10)
    assert pop.bf16
    hist = fit(pop, train, val, epochs=EPOCHS)
    assert pop.stacked._grouped is not None, pop.stacked.why_vmap  # the grouped forward, under autocast
    as32 = [
        tiny_config(*shared, f"optim.lr={lr}", f"seed={20 + i}", "trainer.precision=32-true")
        for i, lr in enumerate((0.05, 0.02))
    ]
    fp32 = build_population(as32, tuple(train[0].shape[1:]), 10)
    assert not fp32.bf16
    hist32 = fit(fp32, train, val, epochs=EPOCHS)
    for i, cfg in enumerate(cfgs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            train_loss, val_loss, _ = sequential(cfg, train, val)
        got_train = torch.tensor([epoch[i] for epoch in hist.train_loss])
        torch.testing.assert_close(got_train, torch.tensor(train_loss), rtol=2e-2, atol=2e-3)
        torch.testing.assert_close(
            torch.tensor([e[i] for e in hist.val_loss]), torch.tensor(val_loss), rtol=2e-2, atol=2e-3
        )
        # bfloat16 really computed: float32 training gives other numbers
        assert not torch.allclose(got_train, torch.tensor([e[i] for e in hist32.train_loss]), rtol=1e-6, atol=0)
    fallback = [tiny_config(*shared, "trainer.precision=16-mixed", f"seed={s}") for s in (1, 2)]
    assert [g.runner for g in plan(fallback)] == ["sequential", "sequential"]
    assert "16-mixed" in plan(fallback)[0].reason
