"""Data modules: offline datasets, splits, normalisation, on-disk formats, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlsuite.config import DataConfig
from dlsuite.data import create_datamodule
from dlsuite.data.base import TensorBatches
from dlsuite.errors import DataError
from tests.fake_data import make_cifar, make_image_folder, make_mnist


def _dm(data_root: Path | None = None, **kw: object):
    cfg = DataConfig(**({"root": str(data_root)} if data_root else {}), **kw)  # type: ignore[arg-type]
    dm = create_datamodule(cfg)
    dm.prepare()
    return dm


def test_mnist1d_has_the_papers_split_and_a_fixed_validation_split(store: str) -> None:
    dm = _dm(name="mnist1d", val_fraction=0.1)
    assert dm.input_shape == (1, 40) and dm.num_classes == 10
    n = {k: len(v[1]) for k, v in dm.splits.items()}
    assert n == {"train": 3600, "val": 400, "test": 1000}
    again = _dm(name="mnist1d", val_fraction=0.1)
    assert torch.equal(dm.splits["val"][0], again.splits["val"][0])  # same seed, same split
    other = _dm(name="mnist1d", val_fraction=0.1, split_seed=5)
    assert not torch.equal(dm.splits["val"][0], other.splits["val"][0])


def test_mnist1d_arguments_pass_through_and_generated_validation(store: str) -> None:
    dm = _dm(name="mnist1d", args={"num_samples": 1000, "val_samples": 200}, val_fraction=0.1)
    n = {k: len(v[1]) for k, v in dm.splits.items()}
    assert n == {"train": 800, "val": 200, "test": 200}  # generated validation: no training data held out
    shuffled = _dm(name="mnist1d", args={"num_samples": 1000, "shuffle_seq": True})
    assert not torch.allclose(dm.splits["test"][0], shuffled.splits["test"][0])


def test_train_samples_caps_training_only(store: str) -> None:
    dm = _dm(name="mnist1d", train_samples=123)
    assert len(dm.splits["train"][1]) == 123 and len(dm.splits["test"][1]) == 1000
    with pytest.raises(Exception, match="exceeds"):
        _dm(name="mnist1d", train_samples=10_000)


def test_normalisation_uses_training_statistics_only(store: str) -> None:
    dm = _dm(name="digits")
    x_train = dm.splits["train"][0]
    assert x_train.mean().abs() < 1e-4 and (x_train.std() - 1).abs() < 1e-2
    assert dm.splits["test"][0].mean().abs() > 1e-4  # test data is shifted by train stats, not its own
    unit = _dm(name="digits", normalize="unit")
    assert 0.0 <= float(unit.splits["train"][0].min()) and float(unit.splits["train"][0].max()) <= 1.0
    sym = _dm(name="digits", normalize="symmetric")
    assert float(sym.splits["train"][0].min()) == -1.0


def test_digits_are_8x8_images_with_a_fixed_three_way_split(store: str) -> None:
    dm = _dm(name="digits", test_fraction=0.2, val_fraction=0.1)
    assert dm.input_shape == (1, 8, 8) and dm.num_classes == 10
    total = sum(len(v[1]) for v in dm.splits.values())
    assert total == 1797 and len(dm.splits["test"][1]) == round(1797 * 0.2)


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_formats_load_from_local_files(tmp_path: Path, name: str, folder: str) -> None:
    make_mnist(tmp_path, folder)
    dm = _dm(tmp_path, name=name, download=False)
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10
    assert len(dm.splits["test"][1]) == 20 and len(dm.splits["train"][1]) + len(dm.splits["val"][1]) == 60


@pytest.mark.parametrize(("name", "hundred", "classes"), [("cifar10", False, 10), ("cifar100", True, 100)])
def test_cifar_formats_load_from_local_files(tmp_path: Path, name: str, hundred: bool, classes: int) -> None:
    make_cifar(tmp_path, hundred=hundred)
    dm = _dm(tmp_path, name=name, download=False)
    assert dm.input_shape == (3, 32, 32) and dm.num_classes == classes


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_missing_files_offline_name_the_files_expected(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as err:
        _dm(tmp_path, name=name, download=False)
    msg = str(err.value)
    assert "expected files" in msg and str(tmp_path) in msg and "data.download is off" in msg


def test_image_folder_reads_class_folders_and_resizes(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    dm = _dm(root, name="image_folder", image_size=10)
    assert dm.input_shape == (3, 10, 10) and dm.num_classes == 3
    assert dm.classes == ["cat", "dog", "fox"]
    with pytest.raises(DataError, match="class sub-folders"):
        _dm(tmp_path / "absent", name="image_folder")


def test_batches_reshuffle_each_epoch_and_cover_every_example() -> None:
    x = torch.arange(10).float()
    it = TensorBatches((x, x), batch_size=4, shuffle=True, seed=0)
    assert len(it) == 3
    first = torch.cat([b[0] for b in it])
    second = torch.cat([b[0] for b in it])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)


def test_batches_shard_across_ddp_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.arange(11).float()
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        train = TensorBatches((x,), batch_size=2, shuffle=True, seed=3)
        evals = TensorBatches((x,), batch_size=2, shuffle=False, train=False)
        assert len(train) == 3  # 5 examples per rank: equal step counts on every rank
        seen.append((torch.cat([b[0] for b in train]), torch.cat([b[0] for b in evals])))
    assert set(seen[0][0].tolist()).isdisjoint(seen[1][0].tolist())
    assert sorted(seen[0][1].tolist() + seen[1][1].tolist()) == list(range(11))  # eval: every example once


def test_shuffled_mnist1d_uses_one_permutation_for_train_val_and_test(store: str) -> None:
    # Read the permutation off each split independently: every shuffled split must be its unshuffled
    # twin (same args, shuffle_seq false) with the same 40 positions permuted the same way.
    args = {"num_samples": 500, "val_samples": 200}
    plain = _dm(name="mnist1d", args=args, val_fraction=0.0)
    shuffled = _dm(name="mnist1d", args={**args, "shuffle_seq": True}, val_fraction=0.0)

    def positions(split: str) -> list[int]:
        a, b = plain.splits[split][0][:, 0], shuffled.splits[split][0][:, 0]  # (N, 40)
        # each shuffled position is the plain column it correlates with perfectly
        za, zb = (a - a.mean(0)) / a.std(0), (b - b.mean(0)) / b.std(0)
        corr = zb.T @ za / (len(a) - 1)  # (40 shuffled, 40 plain)
        assert torch.allclose(corr.max(1).values, torch.ones(40), atol=1e-4), split
        return corr.argmax(1).tolist()

    perm = positions("train")
    assert sorted(perm) == list(range(40)) and perm != list(range(40))
    assert positions("test") == perm and positions("val") == perm
    assert torch.equal(plain.splits["val"][1], shuffled.splits["val"][1])  # the same sequences, reordered


def test_image_folder_with_train_val_test_folders_uses_them_as_splits(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    make_image_folder(root / "train", per_class=6)
    make_image_folder(root / "val", classes=("dog", "fox"), per_class=2)  # val/ lacks a class
    make_image_folder(root / "test", per_class=3)
    dm = _dm(root, name="image_folder", image_size=8, val_fraction=0.5, test_fraction=0.5)
    assert dm.classes == ["cat", "dog", "fox"]  # not ["test", "train", "val"]
    n = {k: len(v[1]) for k, v in dm.splits.items()}
    assert n == {"train": 18, "val": 4, "test": 9}  # the folders, nothing carved from train/
    raw = dm.load()
    assert raw.y_val is not None and raw.x_val is not None and raw.y_test is not None
    # Labels follow train/'s numbering by class name, not val/'s own folder order. make_image_folder makes
    # channel i bright for the i-th class it is given: in train/ cat=0, dog=1, fox=2; in val/ dog=0, fox=1.
    assert sorted(set(raw.y_val.tolist())) == [1, 2]
    assert torch.equal(raw.x_val.mean(dim=(2, 3)).argmax(1) + 1, raw.y_val)
    assert torch.equal(raw.x.mean(dim=(2, 3)).argmax(1), raw.y)


def test_image_folder_without_test_folder_carves_test_from_train(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    make_image_folder(root / "train", per_class=10)
    make_image_folder(root / "val", per_class=2)
    dm = _dm(root, name="image_folder", image_size=8, test_fraction=0.2)
    assert {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 24, "val": 6, "test": 6}


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (("train", "cat", "dog"), "mixes split folders (train) with class folders (cat, dog)"),
        (("cat", "test"), "do not name a class train, val or test"),
        (("val", "test"), "no train/"),
    ],
)
def test_image_folder_mixing_split_and_class_folders_is_refused(
    tmp_path: Path, folders: tuple[str, ...], message: str
) -> None:
    root = make_image_folder(tmp_path / "imgs", classes=folders, per_class=1)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _dm(root, name="image_folder")
