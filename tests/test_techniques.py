"""Every technique name is accepted and has an effect a test can observe (no training runs here: see
test_techniques_runs.py for those)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dlsuite.build import load_run_config
from dlsuite.config import ScheduleConfig
from dlsuite.data.augment import AUGMENTATIONS, Augmenter
from dlsuite.data.resample import bootstrap_indices, fold_indices
from dlsuite.errors import ConfigError
from dlsuite.techniques.ensembles import cycle_ends, ensemble_metrics
from dlsuite.techniques.losses import LOSSES, create_loss
from dlsuite.techniques.optim import OPTIMIZERS, create_optimizer, create_scheduler, param_groups
from dlsuite.techniques.regularizers import BatchMixer, TrainObjective, penalized_weights, weight_penalty

from .conftest import tiny_config


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


# -- optimisers ------------------------------------------------------------------------------------
STATE_KEYS = {
    "sgd": "momentum_buffer",
    "adagrad": "sum",
    "adadelta": "square_avg",
    "rmsprop": "square_avg",
    "adam": "exp_avg",
    "adamw": "exp_avg",
    "adamax": "exp_inf",
    "nadam": "mu_product",
    "radam": "exp_avg",
    "lbfgs": "d",
}


@pytest.mark.parametrize("name", sorted(STATE_KEYS))
def test_every_optimizer_steps_and_keeps_its_state(name: str) -> None:
    assert set(OPTIMIZERS) == set(STATE_KEYS)
    cfg = load_run_config(
        None, [f"optim.name={name}", "optim.lr=0.01", *(["optim.momentum=0.9"] if name == "sgd" else [])]
    )
    net = _net()
    opt = create_optimizer(net, cfg.optim)
    assert isinstance(opt, OPTIMIZERS.get(name))
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    state = opt.state[next(iter(net.parameters()))] if name != "lbfgs" else opt.state[opt._params[0]]
    assert STATE_KEYS[name] in state


def test_nesterov_and_betas_reach_the_optimizer() -> None:
    cfg = load_run_config(None, ["optim.name=sgd", "optim.momentum=0.9", "optim.nesterov=true"])
    opt = create_optimizer(_net(), cfg.optim)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9
    cfg = load_run_config(None, ["optim.name=adam", "optim.betas=[0.8, 0.99]"])
    assert create_optimizer(_net(), cfg.optim).param_groups[0]["betas"] == (0.8, 0.99)
    with pytest.raises(ConfigError, match="nesterov"):
        load_run_config(None, ["optim.name=sgd", "optim.nesterov=true"])
    with pytest.raises(ConfigError, match="momentum does not apply to 'adam'"):
        load_run_config(None, ["optim.name=adam", "optim.momentum=0.9"])


def test_optimizer_implementation_is_fused_where_offered_and_agrees_with_the_loop() -> None:
    def opt(*over: str) -> torch.optim.Optimizer:
        return create_optimizer(_net(), load_run_config(None, list(over)).optim)

    assert opt("optim.name=adam").defaults["fused"] is True  # auto: fused where torch has the kernel
    assert opt("optim.name=rmsprop").defaults["foreach"] is True  # auto: foreach where it has not
    assert opt("optim.name=adam", "optim.implementation=for_loop").defaults["foreach"] is False
    assert opt("optim.name=adam", "optim.args={foreach: true}").defaults["fused"] is None  # args win
    with pytest.raises(ConfigError, match="NAdam has no fused kernel; these do: adagrad, adam"):
        load_run_config(None, ["optim.name=nadam", "optim.implementation=fused"])
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    finals = []
    for impl in ("fused", "foreach", "for_loop"):
        # No bias before a batch norm here: its gradient is rounding noise, which Adam scales up to lr.
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        cfg = load_run_config(None, ["optim.name=adam", "optim.lr=0.01", f"optim.implementation={impl}"])
        o = create_optimizer(net, cfg.optim)
        for _ in range(20):
            o.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            o.step()
        finals.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.allclose(finals[0], finals[2], atol=1e-5) and torch.allclose(finals[1], finals[2], atol=1e-6)


def test_weight_decay_spares_biases_and_norms_unless_asked() -> None:
    net = _net()
    groups = param_groups(net, 0.1, decay_all=False)
    assert all(p.dim() >= 2 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.dim() == 1 for p in groups[1]["params"])
    assert len(param_groups(net, 0.1, decay_all=True)) == 1


# -- schedules --------------------------------------------------------------------------------------
def _lrs(name: str, epochs: int = 8, metric: float = 1.0, **kw: object) -> list[float]:
    opt = torch.optim.SGD(_net().parameters(), lr=1.0)
    c = ScheduleConfig(name=name, **kw)  # type: ignore[arg-type]
    s = create_scheduler(opt, c, epochs, steps_per_epoch=2)
    out = []
    steps = epochs * 2 if s["interval"] == "step" else epochs
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s["scheduler"].step(metric) if name == "plateau" else s["scheduler"].step()
    return out


def test_schedules_give_their_learning_rate_sequences() -> None:
    assert _lrs("constant") == [1.0] * 8
    assert _lrs("step", step_size=3, gamma=0.5)[:7] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert _lrs("multistep", milestones=[2, 5], gamma=0.1)[:6] == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01])
    assert _lrs("exponential", gamma=0.5)[:3] == [1, 0.5, 0.25]
    cos = _lrs("cosine")
    assert cos[0] == 1 and all(a > b for a, b in itertools.pairwise(cos))
    restarts = _lrs("cosine_restarts", restart_epochs=3)
    assert restarts[3] == 1.0 and restarts[2] < restarts[3]  # the warm restart jumps back up
    one = _lrs("onecycle")
    assert len(one) == 16 and max(one) == pytest.approx(1.0, rel=0.01) and one[0] < 0.1 and one[-1] < 0.01
    plateau = _lrs("plateau", patience=1, gamma=0.5)
    assert plateau[0] == 1.0 and plateau[-1] < 1.0  # a flat metric is a plateau


def test_warmup_is_linear_for_every_schedule_that_takes_it() -> None:
    for name in ("constant", "step", "cosine", "exponential", "plateau"):
        lrs = _lrs(name, warmup_epochs=3, warmup_start=0.25, patience=50)
        assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]), name
    with pytest.raises(ConfigError, match="onecycle"):
        _lrs("onecycle", warmup_epochs=2)


# -- losses ------------------------------------------------------------------------------------------
def test_every_loss_is_finite_and_rewards_the_right_class() -> None:
    y = torch.tensor([0, 1, 2, 1])
    good = torch.nn.functional.one_hot(y, 3).float() * 6 - 3
    bad = -good
    for name in LOSSES:
        loss = create_loss(tiny_config(f"task.loss={name}"))
        lg, lb = loss(good, y), loss(bad, y)
        assert lg.dim() == 0 and math.isfinite(float(lg)), name
        assert float(lg) < float(lb), name
    expected = {"cross_entropy", "nll", "bce", "bce_logits", "mse", "mae", "huber", "hinge", "kl_div", "focal"}
    assert expected <= set(LOSSES)


def test_loss_options_and_refusals() -> None:
    logits, y = torch.randn(16, 4), torch.randint(0, 4, (16,))
    ce = create_loss(tiny_config("task.loss=cross_entropy"))(logits, y)
    assert float(create_loss(tiny_config("task.loss=focal", "task.loss_args={gamma: 0}"))(logits, y)) == pytest.approx(
        float(ce), rel=1e-5
    )
    assert float(create_loss(tiny_config("task.loss=kl_div"))(logits, y)) == pytest.approx(float(ce), rel=1e-5)
    smoothed = create_loss(tiny_config("task.loss=cross_entropy", "regularization.label_smoothing=0.2"))(logits, y)
    assert float(smoothed) != pytest.approx(float(ce))
    with pytest.raises(ConfigError, match="label_smoothing does not apply to loss 'nll'"):
        tiny_config("task.loss=nll", "regularization.label_smoothing=0.1")
    with pytest.raises(ConfigError, match=r"no option task.loss_args.gama.*did you mean 'gamma'"):
        tiny_config("task.loss=focal", "task.loss_args={gama: 1}")
    with pytest.raises(ConfigError, match="unknown loss 'focall'"):
        tiny_config("task.loss=focall")


def test_a_loss_that_does_not_fit_the_task_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlsuite.tasks import TASK_SPECS, TASKS, TaskSpec

    # a task whose targets are float values (regression): label losses do not fit it
    monkeypatch.setitem(TASKS._items, "regression_test", TASKS.get("classification"))
    monkeypatch.setitem(TASK_SPECS, "regression_test", TaskSpec("values", "logits", ("val_loss", "val_acc")))
    tiny_config("task.name=regression_test", "task.loss=mse")
    with pytest.raises(
        ConfigError, match=r"loss 'cross_entropy' does not fit the task, whose targets are values.*fit: bce"
    ):
        tiny_config("task.name=regression_test", "task.loss=cross_entropy")


# -- penalties, mixing -------------------------------------------------------------------------------
def test_l1_l2_penalties_add_to_the_loss_on_weights_only() -> None:
    net = _net()
    weights = penalized_weights(net)
    assert [w.dim() for w in weights] == [2, 2]
    l1 = sum(float(w.abs().sum()) for w in weights)
    l2 = sum(float(w.pow(2).sum()) for w in weights)
    assert float(weight_penalty(weights, 0.1, 0.0)) == pytest.approx(0.1 * l1, rel=1e-5)
    assert float(weight_penalty(weights, 0.0, 0.2)) == pytest.approx(0.2 * l2, rel=1e-5)
    assert float(weight_penalty(weights, 0.1, 0.2)) == pytest.approx(0.1 * l1 + 0.2 * l2, rel=1e-5)
    cfg = tiny_config("regularization.l1=0.01", "regularization.l2=0.01")
    obj = TrainObjective(cfg, (6,))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    _, loss, total = obj(net, nn.CrossEntropyLoss(), x, y)
    assert float(total - loss) == pytest.approx(0.01 * l1 + 0.01 * l2, rel=1e-4)


@pytest.mark.parametrize("shape", [(16, 1, 40), (16, 3, 8, 8)])
def test_mixup_and_cutmix_mix_the_batch(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    for mix in (BatchMixer(0.4, 0.0, 1.0), BatchMixer(0.0, 1.0, 1.0)):
        out = mix(x)
        assert out is not None
        mixed, perm, lam = out
        assert mixed.shape == x.shape and not torch.equal(mixed, x) and 0.0 <= lam <= 1.0
        assert sorted(perm.tolist()) == list(range(16))
    cut = BatchMixer(0.0, 1.0, 1.0)(x)
    assert cut is not None
    mixed, perm, lam = cut
    # CutMix pastes, it does not blend: each value comes from the example or its partner.
    assert torch.all((mixed == x) | (mixed == x[perm]))
    assert BatchMixer(0.4, 0.0, 0.0)(x) is None and not BatchMixer(0.0, 0.0, 1.0)


# -- augmentations ----------------------------------------------------------------------------------
IMAGE_AUGS = {
    "random_crop": {"padding": 2},
    "hflip": {"p": 1.0},
    "rotation": {"degrees": 30},
    "scale": {"min": 0.7, "max": 0.8},
    "color_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5},
    "random_erasing": {"p": 1.0},
    "gaussian_noise": {"std": 0.1},
    "amplitude_scale": {},
}
SEQ_AUGS = {
    "roll": {"max_shift": 5},
    "random_erasing": {"p": 1.0},
    "gaussian_noise": {},
    "amplitude_scale": {},
}


def test_every_augmentation_changes_a_batch_and_keeps_its_shape() -> None:
    assert set(AUGMENTATIONS) == set(IMAGE_AUGS) | set(SEQ_AUGS)
    torch.manual_seed(0)
    for augs, shape in ((IMAGE_AUGS, (3, 8, 8)), (SEQ_AUGS, (1, 40))):
        x = torch.randn(32, *shape)
        for name, params in augs.items():
            out = Augmenter([(name, params)], shape)(x)
            assert out.shape == x.shape and out.dtype == x.dtype, name
            assert not torch.equal(out, x), name
            changed = (out != x).flatten(1).any(1)
            assert changed.sum() > 1, name  # several examples, each drawn on its own


def test_augmentations_draw_per_example() -> None:
    x = torch.randn(64, 1, 40)
    out = Augmenter([("roll", {"max_shift": 5})], (1, 40))(x)
    shifts = {next(s for s in range(-5, 6) if torch.equal(torch.roll(x[i], s, -1), out[i])) for i in range(64)}
    assert len(shifts) > 3
    flip = Augmenter([("hflip", {"p": 0.5})], (1, 4, 4))(torch.randn(200, 1, 4, 4))
    assert flip.shape[0] == 200


def test_augmentation_errors_name_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match="'hflip' applies to images"):
        Augmenter([("hflip", {})], (1, 40))
    with pytest.raises(ConfigError, match="'roll' applies to sequences"):
        Augmenter([("roll", {})], (1, 8, 8))
    with pytest.raises(ConfigError, match=r"does not take 'std_dev'.*did you mean 'std'"):
        tiny_config("data.augment=[{name: gaussian_noise, std_dev: 0.1}]")
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'"):
        tiny_config("data.augment=[{name: flip}]")


# -- resampling, ensembles ---------------------------------------------------------------------------
def test_folds_partition_the_data_and_bootstrap_resamples() -> None:
    vals = [fold_indices(10, 3, i, seed=0)[1] for i in range(3)]
    assert sorted(torch.cat(vals).tolist()) == list(range(10))
    train, val = fold_indices(10, 3, 1, seed=0)
    assert not set(train.tolist()) & set(val.tolist()) and len(train) + len(val) == 10
    b = bootstrap_indices(1000, seed=1)
    assert len(b) == 1000 and 550 < len(set(b.tolist())) < 720  # about 63% distinct
    with pytest.raises(ConfigError, match=r"data.fold needs data.folds"):
        tiny_config("data.fold=1")
    with pytest.raises(ConfigError, match=r"must be in 0\.\.2"):
        tiny_config("data.folds=3", "data.fold=3")


def test_ensemble_metrics_average_the_members() -> None:
    y = torch.tensor([0, 1, 2, 0])
    a = torch.tensor([[0.9, 0.1, 0], [0.6, 0.4, 0], [0, 0, 1.0], [0.4, 0.6, 0]])
    b = torch.tensor([[0.9, 0.1, 0], [0.0, 1.0, 0], [0, 0, 1.0], [0.9, 0.1, 0]])
    m = ensemble_metrics([a, b], y)
    assert m["ensemble_test_acc"] == 1.0 and m["ensemble_member_test_acc_mean"] == 0.75
    assert cycle_ends(2, 2, 1, 12) == [2, 6]


def test_snapshot_ensemble_needs_cycles() -> None:
    with pytest.raises(ConfigError, match="cosine_restarts"):
        tiny_config("regularization.ensemble={method: snapshot, members: 2}")
    with pytest.raises(ConfigError, match="needs 3 restart cycles"):
        tiny_config(
            "regularization.ensemble={method: snapshot, members: 3}",
            "optim.schedule.name=cosine_restarts",
            "optim.schedule.restart_epochs=1",
        )
    with pytest.raises(ConfigError, match="choose one"):
        tiny_config("regularization.swa={}", "regularization.ema={}")
