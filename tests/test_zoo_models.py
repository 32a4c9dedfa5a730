"""The model zoo, tested from the registry as timm and torchvision do: every registered model in every
input form it takes builds, runs forward and backward with an odd number of classes, gives every
parameter a gradient and produces no NaN; knobs, input forms and the shared initialiser behave."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
import torch

from dlsuite.errors import ConfigError
from dlsuite.models import INITS, MODELS, apply_init, create_model, list_models, model_inputs, register_model
from dlsuite.models.api import Family, Preset, knob_specs, model_knobs
from dlsuite.models.layers import ACTIVATIONS

NUM_CLASSES = 7  # odd, and unlike any default, so a hard-coded 10 somewhere shows
SHAPES = {"1d": (3, 16), "2d": (3, 12, 12), "tokens": (6,)}
# Small values for whichever of these knobs a model takes: each test takes milliseconds.
TINY = {"width": 8, "hidden": 8, "growth_rate": 4, "embed": 8, "heads": 2, "latent": 4}

EXPECTED = {
    "alexnet",
    "attention_seq2seq",
    "autoencoder",
    "cnn",
    "densenet",
    "gru",
    "inception",
    "lenet",
    "linear",
    "lstm",
    "mlp",
    "mnist1d_cnn",
    "mnist1d_gru",
    "mnist1d_mlp",
    "mobilenet",
    "resnet",
    "rnn",
    "senet",
    "transformer",
    "vgg",
}


def tiny_knobs(name: str, **extra: Any) -> dict[str, Any]:
    """The TINY knobs that model ``name`` takes, plus ``extra``."""
    knobs = model_knobs(name)
    return {**{k: v for k, v in TINY.items() if k in knobs}, **extra}


def example(form: str, batch: int = 2) -> torch.Tensor:
    """A random batch in the given input form."""
    shape = SHAPES[form]
    if form == "tokens":
        return torch.randint(0, NUM_CLASSES, (batch, *shape))
    return torch.randn(batch, *shape)


def forward_backward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Forward, sum every output into a scalar, backward; returns the main output."""
    out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        assert torch.isfinite(o).all(), "NaN or inf in the output"
    sum(o.float().square().mean() for o in outs).backward()
    return outs[0]


# The zoo: models defined in dlsuite.models (the transfer model has its own tests; benchmarks register
# their own recipe models when imported).
ZOO = [n for n in list_models() if MODELS.get(n).__module__.startswith("dlsuite.models.")]
CASES = [(name, form) for name in ZOO for form in model_inputs(name)]
FAMILIES = [n for n in ZOO if not isinstance(MODELS.get(n), Preset)]  # presets repeat their family's knobs


@pytest.mark.parametrize(("name", "form"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_every_model_forward_backward(name: str, form: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, SHAPES[form], NUM_CLASSES, **tiny_knobs(name))
    x = example(form)
    out = forward_backward(model, x)
    if name == "autoencoder":
        assert out.shape == x.shape
    elif form == "tokens":
        assert out.shape == (2, SHAPES["tokens"][0], NUM_CLASSES)
    else:
        assert out.shape == (2, NUM_CLASSES)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: parameter {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: parameter {pname} has an all-zero gradient"


def test_registry_lists_exactly_the_exported_models() -> None:
    # The zoo is all there (other capabilities may register more models, each checked below).
    assert set(ZOO) >= EXPECTED
    for name in ZOO:
        entry = MODELS.get(name)
        module = importlib.import_module(entry.__module__)
        assert entry.__doc__, f"{name} has no docstring"
        if isinstance(entry, Preset):  # a preset names a family and sets some of its knobs
            assert entry.base in FAMILIES and set(entry.knobs) <= set(model_knobs(entry.base))
            assert getattr(module, entry.__name__) is entry  # an entry point of its family's module
            continue
        # torchvision's check: what the registry holds is the public class of its family module
        assert isinstance(entry, type) and issubclass(entry, torch.nn.Module)
        assert getattr(module, entry.__name__) is entry
        params = list(inspect.signature(entry).parameters.values())
        assert [p.name for p in params[:2]] == ["input_shape", "num_classes"]
        assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params[2:]), f"{name}: knobs are keyword-only"


def test_every_knob_of_the_zoo_declares_its_type_and_range() -> None:
    # One vocabulary: a knob name means one thing (one meaning and type) in every family that has it.
    seen: dict[str, tuple[str, type]] = {}
    for name in FAMILIES:
        for knob, spec in knob_specs(name).items():
            assert spec.knob is not None and spec.kind is not None, f"{name}.{knob} has no declared type and range"
            assert spec.knob.check(spec.kind, spec.default) is None, f"{name}.{knob}: default outside its range"
            meaning = seen.setdefault(knob, (spec.knob.meaning, spec.kind))
            assert meaning[1] is spec.kind, f"{knob} is a {spec.kind} in {name} but a {meaning[1]} elsewhere"
            assert meaning[0] == spec.knob.meaning, f"{knob} means two things"


def test_list_models_pattern() -> None:
    assert list_models("res*") == ["resnet"]
    assert {"rnn", "lstm", "gru"} <= set(list_models("*")) and list_models("*net") == [
        "alexnet",
        "densenet",
        "lenet",
        "mobilenet",
        "resnet",
        "senet",
    ]


def test_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_model("resnet")(lambda input_shape, num_classes: torch.nn.Identity())


def test_a_family_names_vocabulary_knobs_on_its_class_line_and_takes_no_other() -> None:
    # A class-line knob gets the vocabulary's type and range by its name; a name outside it is refused
    # when the class is defined, an unknown knob when the model is built directly.
    with pytest.raises(TypeError, match=r"\['widht'\] are not in the knob vocabulary"):

        class Misspelt(Family, widht=8):
            pass

    with pytest.raises(TypeError, match=r"\['width'\] are both class-line knobs and __init__ arguments"):

        class Twice(Family, width=8):
            def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, width: int = 4) -> None:
                super().__init__()

    class Sub(Family, width=8, norm="none"):
        pass

    class SubSub(Sub, norm="batch"):
        pass

    assert SubSub.knob_defaults == {"width": 8, "norm": "batch"} and Sub.knob_defaults["norm"] == "none"
    with pytest.raises(TypeError, match=r"unexpected knobs \['channels'\]"):
        MODELS.get("resnet")((1, 16), 3, channels=4)


def test_unknown_knob_names_the_knobs_taken() -> None:
    with pytest.raises(ConfigError, match=r"does not take knob 'widht' \(did you mean 'width'\?\).*it takes: width"):
        create_model("resnet", (1, 40), 3, widht=8)


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("attention_seq2seq", (1, 40), r"takes \(L,\) token sequences"),
        ("lenet", (5,), r"\(C, L\) sequences or \(C, H, W\) images"),
    ],
)
def test_wrong_input_form_is_refused(name: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model(name, shape, 3)


@pytest.mark.parametrize(
    ("name", "knobs", "message"),
    [
        ("resnet", {"block": "huge"}, "block must be one of 'basic', 'bottleneck'"),
        ("vgg", {"pool": "median"}, "pool must be one of 'max', 'avg'"),
        ("gru", {"head": "cls"}, "head must be one of 'last', 'gap', 'flatten'"),
        ("transformer", {"width": 10, "heads": 4}, r"^model.heads \(4\) must divide model.width \(10\)"),
        ("transformer", {"width": 10}, r"^model.heads \(4\) must divide model.width \(10\) \(model 'transformer'\)$"),
        ("attention_seq2seq", {"attention": "cosine"}, "attention must be one of"),
        ("cnn", {"activation": "swish"}, r"model.activation must be one of 'elu', 'gelu'.*, got 'swish'"),
        ("vgg", {"norm": "group"}, r"model.norm must be one of 'batch', 'layer', 'none', got 'group'"),
        ("cnn", {"dropout": 1.5}, r"^model.dropout must be >= 0 and < 1, got 1.5 \(model 'cnn'\)$"),
        ("mlp", {"width": 0}, "model.width must be >= 1, got 0"),
        ("mlp", {"depth": -1}, "model.depth must be >= 0, got -1"),
        ("resnet", {"depth": 2.5}, "model.depth must be an int, got 2.5"),
        ("resnet", {"width": True}, "model.width must be an int, got True"),
        ("resnet", {"shortcut": "yes"}, "model.shortcut must be a bool, got 'yes'"),
        ("densenet", {"compression": 0}, "model.compression must be > 0 and <= 1, got 0"),
    ],
)
def test_bad_knob_values_are_config_errors(name: str, knobs: dict[str, Any], message: str) -> None:
    shape = SHAPES["tokens"] if name == "attention_seq2seq" else SHAPES["1d"]
    with pytest.raises(ConfigError, match=message):
        create_model(name, shape, 3, **knobs)


def _takes(knob: str) -> list[str]:
    return [n for n in FAMILIES if knob in model_knobs(n)]


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
@pytest.mark.parametrize("name", ["cnn", "resnet", "mobilenet"])
def test_every_activation(name: str, activation: str) -> None:
    model = create_model(name, SHAPES["1d"], NUM_CLASSES, **tiny_knobs(name, activation=activation))
    assert any(isinstance(m, type(ACTIVATIONS.get(activation)())) for m in model.modules())
    forward_backward(model, example("1d"))


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("name", [n for n in _takes("norm") if n != "mlp"])  # mlp: LayerNorm / BatchNorm1d
def test_every_norm(name: str, norm: str) -> None:
    model = create_model(name, SHAPES["2d"], NUM_CLASSES, **tiny_knobs(name, norm=norm))
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (norm == "batch")
    forward_backward(model, example("2d"))


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("name", [n for n in _takes("pool") if n != "cnn"])
def test_every_pool(name: str, pool: str) -> None:
    model = create_model(name, SHAPES["1d"], NUM_CLASSES, **tiny_knobs(name, pool=pool))
    cls = torch.nn.MaxPool1d if pool == "max" else torch.nn.AvgPool1d
    assert any(isinstance(m, cls) for m in model.modules())
    forward_backward(model, example("1d"))


@pytest.mark.parametrize("head", ["gap", "flatten"])
@pytest.mark.parametrize("name", [n for n in _takes("head") if n not in ("rnn", "lstm", "gru", "transformer")])
def test_every_head(name: str, head: str) -> None:
    model = create_model(name, SHAPES["2d"], NUM_CLASSES, **tiny_knobs(name, head=head))
    has_gap = any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())
    assert has_gap == (head == "gap")
    forward_backward(model, example("2d"))


def test_depth_and_width_change_the_model() -> None:
    sizes = [
        sum(p.numel() for p in create_model("resnet", SHAPES["1d"], 3, width=w, depth=d).parameters())
        for w, d in ((8, 1), (8, 2), (16, 2))
    ]
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.mark.parametrize("shortcut", [True, False])
def test_shortcut_carries_the_gradient_past_dead_blocks(shortcut: bool) -> None:
    # With every block's last conv zeroed, only the identity shortcut connects the stem to the
    # head: with it the stem still learns, without it the stem gets exactly no gradient.
    torch.manual_seed(0)
    model = create_model("resnet", SHAPES["1d"], 3, width=8, stages=1, depth=3, shortcut=shortcut)
    for block in list(model.features)[1:]:
        torch.nn.init.zeros_(block.body[-1][0].weight)
    forward_backward(model, example("1d"))
    stem_grad = model.features[0][0].weight.grad.abs().sum()
    assert (stem_grad > 0) == shortcut


@pytest.mark.parametrize("init", INITS.names())
def test_every_init_on_every_kind_of_layer(init: str) -> None:
    torch.manual_seed(0)
    for name, form in (("resnet", "2d"), ("lstm", "1d"), ("transformer", "1d"), ("autoencoder", "1d")):
        model = create_model(name, SHAPES[form], NUM_CLASSES, **tiny_knobs(name))
        apply_init(model, init)
        forward_backward(model, example(form))
        if init == "zeros":
            conv_or_linear = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
            assert conv_or_linear and all(m.weight.abs().sum() == 0 for m in conv_or_linear)


@pytest.mark.parametrize("init", ["default", "orthogonal", "zeros"])
def test_lstm_forget_gate_bias_survives_the_shared_initialiser(init: str) -> None:
    model = create_model("lstm", SHAPES["1d"], 3, width=5, depth=2, bidirectional=True, forget_bias=1.0)
    apply_init(model, init)
    h = 5
    for pname, p in model.rnn.named_parameters():
        if pname.startswith("bias_ih"):
            assert torch.all(p[h : 2 * h] == 1.0), pname
        if pname.startswith("bias_hh"):
            assert torch.all(p[h : 2 * h] == 0.0), pname


def test_seq2seq_teacher_forcing_and_greedy_decoding_differ_only_in_their_inputs() -> None:
    torch.manual_seed(0)
    model = create_model("attention_seq2seq", (5,), 4, embed=8, width=8).eval()
    src = torch.randint(0, 4, (3, 5))
    greedy = model(src)
    # Feeding the model its own greedy tokens as the "target" reproduces the greedy logits exactly.
    forced = model(src, greedy.argmax(-1))
    assert torch.allclose(greedy, forced, atol=1e-6)
    assert model.last_attention is not None and model.last_attention.shape == (3, 5, 5)
    assert torch.allclose(model.last_attention.sum(-1), torch.ones(3, 5))


def test_vae_samples_in_training_and_uses_the_mean_in_evaluation() -> None:
    torch.manual_seed(0)
    model = create_model("autoencoder", (1, 20), 3, width=4, latent=3, variational=True)
    x = torch.randn(4, 1, 20)
    recon, kl = model(x)
    assert recon.shape == x.shape and kl > 0
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("cnn", "channels", "width"),
        ("gru", "hidden", "width"),
        ("densenet", "blocks", "stages"),
        ("mlp", "residual", "shortcut"),
    ],
)
def test_renamed_knobs_are_refused_with_their_new_name(name: str, old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=rf"^model.{old} was renamed to model.{new} \(model '{name}'\)$"):
        create_model(name, SHAPES["1d"], 3, **{old: 8})


def test_hidden_still_means_the_head_layers_where_a_head_has_them() -> None:
    assert "hidden" in model_knobs("alexnet") and "hidden" not in model_knobs("gru")
    create_model("vgg", SHAPES["1d"], 3, width=4, hidden=8)


@pytest.mark.parametrize("preset", [n for n in ZOO if isinstance(MODELS.get(n), Preset)])
def test_a_preset_is_its_family_with_the_preset_knobs(preset: str) -> None:
    entry = MODELS.get(preset)
    assert isinstance(entry, Preset)
    assert model_knobs(preset) == {**model_knobs(entry.base), **entry.knobs}
    form = model_inputs(preset)[0]
    torch.manual_seed(0)
    a = create_model(preset, SHAPES[form], NUM_CLASSES)
    torch.manual_seed(0)
    b = create_model(entry.base, SHAPES[form], NUM_CLASSES, **entry.knobs)
    assert type(a) is type(b)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    # Knobs given with a preset override its values.
    assert create_model(preset, SHAPES[form], NUM_CLASSES, dropout=0.25) is not None


def test_mnist1d_cnn_is_the_papers_cnn() -> None:
    model = create_model("mnist1d_cnn", (1, 40), 10)
    assert sum(p.numel() for p in model.parameters()) == 5210  # the paper's CNN (docs/models.md)


def test_a_rename_applies_to_its_family_and_presets_only() -> None:
    with pytest.raises(ConfigError, match=r"^model.hidden was renamed to model.width \(model 'mnist1d_gru'\)$"):
        create_model("mnist1d_gru", SHAPES["1d"], 3, hidden=8)
    with pytest.raises(ConfigError, match=r"^model 'cnn' does not take knob 'hidden'"):
        create_model("cnn", SHAPES["1d"], 3, hidden=8)  # cnn never had one: no rename to suggest
