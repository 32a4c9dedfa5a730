"""Transfer learning: backbone providers, freezing strategies, suite checkpoints, linked runs, search.

No downloads: torchvision / timm backbones are built without weights; the offline EfficientNet-Lite0
uses its real packaged ImageNet weights. Inputs are tiny (8x8 digits resized to 32 px at most).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from dlsuite.build import load_run_config
from dlsuite.cli import main
from dlsuite.errors import ConfigError
from dlsuite.models import create_model
from dlsuite.techniques.optim import create_optimizer
from dlsuite.tracking import store as tracking_store
from dlsuite.transfer import BACKBONES, TRANSFER_STRATEGIES, PretrainedWeightsMissing, TransferNet
from dlsuite.transfer.providers import efficientnet_lite0, load_suite_checkpoint
from dlsuite.transfer.unfreeze import GradualUnfreeze

DIGITS = [
    "data.name=digits",
    "data.normalize=unit",
    "trainer.progress_bar=false",
    "data.batch_size=50",
]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module, kind: str = "param") -> set[str]:
    """Names whose tensors differ from ``before``; ``kind``: params (float, not running stats) or bn stats."""
    out = set()
    for k, v in module.state_dict().items():
        is_stat = "running_" in k or "num_batches_tracked" in k
        if (kind == "stat") != is_stat:
            continue
        if not torch.equal(before[k], v):
            out.add(k)
    return out


# -- the offline pretrained default -----------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return efficientnet_lite0().eval()


@pytest.mark.parametrize(("image", "classes"), [("chelsea", range(281, 286)), ("coffee", [967])])
def test_efficientnet_lite0_is_really_pretrained(lite0: torch.nn.Module, image: str, classes: range) -> None:
    import skimage.data

    x = torch.tensor(getattr(skimage.data, image)()).permute(2, 0, 1).float()[None] / 255  # (1, 3, H, W)
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        p = lite0((x - 0.5) / 0.5).softmax(-1)[0]  # inputs scaled to [-1, 1]
    assert int(p.argmax()) in classes
    assert float(p.max()) > 0.5  # confident, not a lucky argmax of a random net


def test_lite0_random_init_is_not_pretrained() -> None:
    a = efficientnet_lite0(num_classes=0, pretrained=False).state_dict()
    b = efficientnet_lite0(num_classes=0, pretrained=True).state_dict()
    assert not torch.equal(a["conv_stem.weight"], b["conv_stem.weight"])


# -- every provider: forward + backward on a tiny input ---------------------------------------------
PROVIDERS = [
    ("efficientnet_lite0", True),
    ("torchvision:resnet18", False),
    ("torchvision:mobilenet_v3_small", False),
    ("torchvision:efficientnet_b0", False),
    ("timm:resnet18", False),
    ("timm:mobilenetv3_small_050", False),
]


@pytest.mark.parametrize(("backbone", "pretrained"), PROVIDERS)
def test_backbone_forward_backward(backbone: str, pretrained: bool) -> None:
    torch.manual_seed(0)
    net = create_model(
        "transfer", (1, 8, 8), 10, backbone=backbone, pretrained=pretrained, image_size=32, strategy="finetune"
    )
    x = torch.rand(4, 1, 8, 8)  # digits-like: 1 channel, 8x8 -> adapted to 3x32x32
    out = net(x)
    assert out.shape == (4, 10)
    F.cross_entropy(out, torch.arange(4)).backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad[:5]
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_input_adapter_resizes_repeats_and_normalises() -> None:
    net = create_model("transfer", (1, 8, 8), 3, image_size=16, strategy="feature_extract")
    assert isinstance(net, TransferNet)
    x = torch.rand(2, 1, 8, 8)
    a = net.adapter(x)
    assert a.shape == (2, 3, 16, 16)
    assert torch.equal(a[:, 0], a[:, 2])  # grey repeated to 3 channels
    assert float(a.min()) >= -1.0 - 1e-6 and float(a.max()) <= 1.0 + 1e-6  # [0,1] -> lite0's [-1, 1]
    assert float(a.min()) < -0.5


def test_registries_list_backbones_and_strategies(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(TRANSFER_STRATEGIES) == {"feature_extract", "finetune", "gradual_unfreeze"}
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out.split()
    for name in ("efficientnet_lite0", "torchvision:<ARCH>", "timm:<NAME>", "run:<MLFLOW_RUN_ID>"):
        assert name in out
    assert main(["list", "backbones", "torchvision:*"]) == 0
    out = capsys.readouterr().out.split()
    assert "torchvision:resnet18" in out and "torchvision:mobilenet_v3_small" in out
    assert main(["list", "backbones", "timm:resnet1*"]) == 0
    assert "timm:resnet18" in capsys.readouterr().out.split()
    assert main(["list", "transfer_strategies"]) == 0
    assert capsys.readouterr().out.split() == ["feature_extract", "finetune", "gradual_unfreeze"]
    assert "timm:resnet18" in BACKBONES and "timm:no_such_net" not in BACKBONES
    assert "torchvision:resnet18" in BACKBONES and "torchvision:no_such_net" not in BACKBONES


# -- freezing ----------------------------------------------------------------------------------------
def _steps(net: torch.nn.Module, cfg_overrides: list[str], n: int = 3) -> None:
    cfg = load_run_config(None, [*DIGITS, "model.name=transfer", *cfg_overrides])
    opt = create_optimizer(net, cfg.optim)
    net.train()
    torch.manual_seed(0)
    for _ in range(n):
        x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("frozen_bn", ["eval", "train"])
def test_feature_extract_freezes_backbone(frozen_bn: str) -> None:
    net = create_model("transfer", (1, 8, 8), 10, image_size=32, strategy="feature_extract", frozen_bn=frozen_bn)
    bb, head = _state(net.backbone), _state(net.head)
    assert not any(p.requires_grad for p in net.backbone.parameters())
    _steps(net, ["optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=0.01"])
    assert all(p.grad is None for p in net.backbone.parameters())  # no gradient reached it
    assert not _changed(bb, net.backbone)  # weights unchanged, weight decay included
    assert _changed(head, net.head)  # the new head learned
    bns = [m for m in net.backbone.modules() if isinstance(m, _BatchNorm)]
    if frozen_bn == "eval":
        assert not _changed(bb, net.backbone, "stat")  # running statistics kept from pretraining
        assert all(not m.training for m in bns)
    else:
        assert _changed(bb, net.backbone, "stat")  # statistics adapt to the new data
        assert all(m.training for m in bns)


def test_finetune_trains_everything_with_lower_backbone_lr() -> None:
    net = create_model("transfer", (1, 8, 8), 10, image_size=32, strategy="finetune", backbone_lr_scale=0.1)
    cfg = load_run_config(None, [*DIGITS, "model.name=transfer", "optim.lr=0.01", "optim.weight_decay=0.1"])
    opt = create_optimizer(net, cfg.optim)
    lrs = {(g["name"], g["weight_decay"]): g["lr"] for g in opt.param_groups}
    assert lrs == {("head", 0.1): 0.01, ("head", 0.0): 0.01, ("backbone", 0.1): 0.001, ("backbone", 0.0): 0.001}
    bb = _state(net.backbone)
    _steps(net, ["optim.lr=0.01"])
    params = {k for k, _ in net.backbone.named_parameters()}
    assert _changed(bb, net.backbone) == params  # every backbone weight moved
    net2 = create_model("transfer", (1, 8, 8), 10, strategy="finetune", backbone_lr=3e-5)
    opt2 = create_optimizer(net2, cfg.optim)
    assert {g["name"]: g["lr"] for g in opt2.param_groups}["backbone"] == 3e-5


@pytest.mark.slow
def test_gradual_unfreeze_top_down(store: str) -> None:
    """Through a real Lightning run: the strategy's callback reaches the Trainer via the task."""
    from dlsuite.runner.run import train

    cfg = load_run_config(
        None,
        [
            *DIGITS,
            "data.train_samples=100",
            "model.name=transfer",
            "model.image_size=16",
            "model.strategy=gradual_unfreeze",
            "model.unfreeze_epoch=1",
            "model.unfreeze_stages=2",
            "model.unfreeze_every=5",
            "trainer.max_epochs=2",
            "trainer.test_checkpoint=last",
            "optim.lr=0.01",
            "tracking.enabled=false",
            "data.val_fraction=0.05",
            "data.test_fraction=0.05",
        ],
    )
    before = create_model("transfer", (1, 8, 8), 10, image_size=16, strategy="gradual_unfreeze")
    res = train(cfg)
    net = res.task.model
    assert isinstance(net, TransferNet)
    cb = GradualUnfreeze(net, 1, 2, 5)
    top, bottom = cb.schedule[0], cb.schedule[1]
    assert cb.unfreeze_epoch_of(0) == 1 and cb.unfreeze_epoch_of(1) == 6
    # epoch 0 head only, epoch 1 the top half too; the bottom half (due at epoch 6) never learned
    assert all(p.requires_grad for m in top for p in m.parameters())
    assert not any(p.requires_grad for m in bottom for p in m.parameters())
    ref = dict(before.backbone.named_parameters())
    names = {id(p): n for n, p in net.backbone.named_parameters()}
    for chunk, should_change in ((top, True), (bottom, False)):
        moved = [not torch.equal(ref[names[id(p)]], p.detach()) for m in chunk for p in m.parameters()]
        assert any(moved) if should_change else not any(moved)
    # frozen BN layers of the bottom stay in eval mode; unfrozen ones train again
    assert all(not m.training for c in bottom for m in c.modules() if isinstance(m, _BatchNorm))


# -- the suite's own checkpoints ---------------------------------------------------------------------
MNIST1D_RUN = ["trainer.max_epochs=2", "trainer.progress_bar=false", "data.batch_size=50", "data.train_samples=300"]
PRETRAIN = [*MNIST1D_RUN, "model.width=8", "model.norm=batch"]


@pytest.mark.slow
def test_pretrain_then_finetune_two_linked_runs(store: str) -> None:
    from dlsuite.runner.transfer import pretrain_then_finetune

    pre = load_run_config(None, PRETRAIN)
    # another MNIST-1D variant: twice the correlated noise (1000 sequences: generating it is the slow part)
    ft = load_run_config(
        None, [*MNIST1D_RUN, "data.args.corr_noise_scale=0.5", "data.args.num_samples=1000", "data.train_samples=200"]
    )
    out = pretrain_then_finetune(pre, ft, strategy="finetune", backbone_lr_scale=0.5)
    c = tracking_store.client()
    src, dst = c.get_run(out.pretrain.run_id), c.get_run(out.finetune.run_id)
    assert src.info.status == dst.info.status == "FINISHED"
    assert dst.data.tags["dlsuite.source_run"] == src.info.run_id
    assert dst.data.tags["dlsuite.source_model"] == "cnn"
    assert src.data.tags["dlsuite.finetuned_by"] == dst.info.run_id
    assert dst.data.params["model.backbone"] == f"run:{src.info.run_id}"
    assert dst.data.params["data.args.corr_noise_scale"] == "0.5"

    # the fine-tune starts from the source's weights: rebuild it and compare with the checkpoint
    net = create_model("transfer", (1, 40), 10, backbone=f"run:{src.info.run_id}")
    ckpt = Path(c.download_artifacts(src.info.run_id, "checkpoints/best.ckpt", str(Path.cwd())))
    source_model, hp = load_suite_checkpoint(ckpt)
    assert hp["config"]["model"]["name"] == "cnn"
    a, b = source_model.features.state_dict(), net.backbone.features.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and a checkpoint path works as well as run:ID
    net2 = create_model("transfer", (1, 40), 10, backbone=str(ckpt))
    assert torch.equal(net2.backbone.features[0].weight, source_model.features[0].weight)
    # pretrained=false: the same architecture from scratch (the control)
    net3 = create_model("transfer", (1, 40), 10, backbone=str(ckpt), pretrained=False)
    assert not torch.equal(net3.backbone.features[0].weight, source_model.features[0].weight)


class NotData:
    """An arbitrary object: unpickling it would run code, which weights_only=True refuses."""


def test_suite_checkpoint_is_loaded_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": NotData()}}, path)
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_suite_checkpoint(path)
    with pytest.raises(ConfigError, match="not a dlsuite checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
        load_suite_checkpoint(tmp_path / "plain.ckpt")


def test_unknown_run_is_a_clear_error(store: str) -> None:
    cfg = load_run_config(None, [*DIGITS, "model.name=transfer", "model.backbone=run:0123456789abcdef"])
    from dlsuite.runner.run import train

    with pytest.raises(ConfigError, match="no such run"):
        train(cfg)


# -- missing pretrained weights offline --------------------------------------------------------------
def test_missing_pretrained_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLSUITE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(PretrainedWeightsMissing, match=r"torchvision:resnet18 not found: offline.*checkpoints.*"):
        create_model("transfer", (3, 32, 32), 10, backbone="torchvision:resnet18")
    with pytest.raises(PretrainedWeightsMissing, match=r"timm:resnet18 not found: offline.*pretrained="):
        create_model("transfer", (3, 32, 32), 10, backbone="timm:resnet18")
    with pytest.raises(PretrainedWeightsMissing, match="does not exist"):
        create_model("transfer", (3, 32, 32), 10, backbone="timm:resnet18", pretrained=str(tmp_path / "none.pth"))


def test_explicit_weights_path_is_loaded(tmp_path: Path) -> None:
    import torchvision

    src = torchvision.models.resnet18()
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    net = create_model(
        "transfer", (3, 32, 32), 5, backbone="torchvision:resnet18", pretrained=str(tmp_path / "r18.pth")
    )
    assert torch.equal(net.backbone.net.conv1.weight, src.conv1.weight)
    assert net.tracking_tags["dlsuite.transfer.weights"].endswith("r18.pth")


def test_cli_missing_weights_exits_2_and_writes_nothing(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DLSUITE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = tmp_path / "t.yaml"
    cfg.write_text("data: {name: digits, normalize: unit}\nmodel: {name: transfer, backbone: 'torchvision:resnet18'}\n")
    assert main(["train", str(cfg)]) == 2
    assert "pretrained weights of torchvision:resnet18 not found" in capsys.readouterr().err
    assert not Path("mlruns").exists()


# -- config checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.backbone=torchvision:resnet81"], "did you mean 'torchvision:resnet18'"),
        (["model.backbone=timm:resnet81"], "unknown timm model"),
        (["model.strategy=freeze"], "unknown transfer strategy 'freeze'"),
        (["data.normalize=standard"], "set data.normalize=unit"),
        (["model.init=kaiming_normal"], "model.init does not apply"),
        (["model.bogus=1"], "does not take knob 'bogus'"),
        (["model.strategy=gradual_unfreeze", "trainer.strategy=ddp"], "does not work with trainer.strategy"),
    ],
)
def test_bad_transfer_config_is_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(None, [*DIGITS, "model.name=transfer", *overrides])


ROOT = Path(__file__).resolve().parents[1]


def test_shipped_transfer_yamls_validate() -> None:
    from dlsuite import yamlio
    from dlsuite.config import apply_overrides, build_config

    cfg = load_run_config(ROOT / "configs" / "transfer_digits.yaml")
    assert cfg.model.name == "transfer" and cfg.data.train_per_class == 10
    spec = yamlio.load(ROOT / "studies" / "transfer_vs_scratch.yaml")
    assert spec["type"] == "compare" and spec["metric"] == "test_acc" and spec["seeds"] == [0, 1, 2]
    strategies = set()
    for name, sets in spec["variants"].items():
        v = build_config(apply_overrides(spec["base"], [*spec["overrides"], *sets]), name)
        strategies.add(v.model.knobs.get("strategy", "scratch") if v.model.name == "transfer" else v.model.name)
        assert v.data.train_per_class == int(name.rsplit("_", 1)[1])
    assert strategies == {"cnn", "finetune", "feature_extract", "gradual_unfreeze"}


def test_train_per_class_keeps_k_per_class() -> None:
    from dlsuite.data import create_datamodule

    cfg = load_run_config(None, [*DIGITS, "data.train_per_class=10"])
    dm = create_datamodule(cfg.data)
    dm.prepare()
    y = dm.splits["train"][1]
    assert len(y) == 100 and torch.bincount(y).tolist() == [10] * 10
    with pytest.raises(ConfigError, match="has only"):
        bad = create_datamodule(load_run_config(None, [*DIGITS, "data.train_per_class=500"]).data)
        bad.prepare()


# -- searchable by Optuna like any other run ---------------------------------------------------------
@pytest.mark.slow
def test_optuna_searches_transfer_knobs(store: str) -> None:
    import optuna

    from dlsuite.runner.run import train

    pre = load_run_config(None, [*PRETRAIN, "trainer.max_epochs=1"])
    src = train(pre).run_id
    seen: list[dict[str, float]] = []

    def objective(trial: optuna.Trial) -> float:
        sets = [
            f"optim.lr={trial.suggest_float('head_lr', 1e-3, 1e-1, log=True)}",
            f"model.backbone_lr={trial.suggest_float('backbone_lr', 1e-5, 1e-2, log=True)}",
            f"model.unfreeze_epoch={trial.suggest_int('unfreeze_epoch', 0, 1)}",
        ]
        cfg = load_run_config(
            None,
            [
                *MNIST1D_RUN,
                "model.name=transfer",
                f"model.backbone=run:{src}",
                "model.strategy=gradual_unfreeze",
                *sets,
            ],
        )
        res = train(cfg)
        net = res.task.model
        groups = {g["name"]: g["lr"] for g in res.task.trainer.optimizers[0].param_groups}
        seen.append({"head": groups["head"], "backbone": groups["backbone"], "params": copy.copy(trial.params)})
        assert isinstance(net, TransferNet)
        return res.metrics["test_acc"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2)
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for s in seen:  # the sampled values reached the optimiser's groups
        assert s["head"] == pytest.approx(s["params"]["head_lr"])
        assert s["backbone"] == pytest.approx(s["params"]["backbone_lr"])
