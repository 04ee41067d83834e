import numpy as np
import pytest
import torch

from harness.data import DATASETS, resolve_data_dir, validation_split
from conftest import write_idx
from harness.errors import UserError


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("STBENCH_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "cli") == tmp_path / "cli"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("STBENCH_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir(None) == tmp_path / "datasets"


def test_validation_split_is_fixed_disjoint_and_seeded():
    train, val = validation_split(100, 20, split_seed=0)
    again_train, again_val = validation_split(100, 20, split_seed=0)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert len(val) == 20 and len(train) == 80 and not set(val.tolist()) & set(train.tolist())
    assert not torch.equal(validation_split(100, 20, split_seed=1)[1], val)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_loads_normalised_tensors_with_limits(fake_root, name):
    dataset = DATASETS[name]
    dataset.prepare(fake_root, download=False)
    splits = dataset.load(fake_root, val_size=100, train_limit=300, test_limit=50)
    assert splits.train_x.shape == (300, 1, 28, 28) and splits.train_x.dtype == torch.float32
    assert splits.val_x.shape == (100, 1, 28, 28) and splits.test_x.shape == (50, 1, 28, 28)
    assert splits.num_classes == 10 and splits.in_shape == (1, 28, 28)
    expected_min = (0 - dataset.mean) / dataset.std
    assert splits.train_x.min().item() == pytest.approx(expected_min, rel=1e-4)


def test_real_mnist_has_the_official_sizes(mnist_root):
    if "shared" not in str(mnist_root):
        pytest.skip("real MNIST not present")
    assert DATASETS["mnist"].split_sizes(mnist_root) == (60_000, 10_000)


def test_missing_files_name_the_files_and_how_to_point_at_them(tmp_path, fake_root):
    with pytest.raises(UserError) as err:
        DATASETS["fashion_mnist"].prepare(tmp_path / "empty", download=False)
    msg = str(err.value)
    assert f"fashion_mnist: no IDX files in {tmp_path}/empty/FashionMNIST/raw (download disabled)" in msg
    assert "--data-dir" in msg and "STBENCH_DATA_DIR" in msg and "\n" not in msg
    assert len(msg.replace(str(tmp_path), "")) < 200
    for name in ("t10k-labels-idx1-ubyte", "train-images-idx3-ubyte"):
        (fake_root / "FashionMNIST" / "raw" / name).unlink()
        with pytest.raises(UserError) as err:
            DATASETS["fashion_mnist"].prepare(fake_root, download=False)
    assert "fashion_mnist: missing train-images-idx3-ubyte and 1 more in" in str(err.value)


@pytest.mark.parametrize("damage,expected", [
    (lambda p: p.write_bytes(b"\x00\x00\x08\x02" + p.read_bytes()[4:]), "bad IDX magic number"),
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated or corrupt"),
    (lambda p: p.write_bytes(p.read_bytes()[:6]), "truncated"),
])
def test_corrupt_idx_files_are_reported(fake_root, damage, expected):
    damage(fake_root / "MNIST" / "raw" / "train-images-idx3-ubyte")
    with pytest.raises(UserError, match=expected):
        DATASETS["mnist"].prepare(fake_root, download=False)


def test_images_and_labels_must_agree(fake_root):
    write_idx(fake_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(UserError, match="disagree on the number of items"):
        DATASETS["mnist"].prepare(fake_root, download=False)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_our_idx_reader_gives_torchvisions_arrays_and_class_names(fake_root, name):
    """Trials read the IDX files themselves (importing torchvision costs each trial process ~1 s of CPU);
    the arrays and class names must be exactly what torchvision's dataset class gives."""
    import torchvision

    dataset = DATASETS[name]
    for train in (True, False):
        reference = dataset.torchvision_class(root=str(fake_root), train=train, download=False)
        images, labels = dataset.read(fake_root, train=train)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(images, reference.data) and torch.equal(labels, reference.targets)
    assert list(dataset.classes) == list(getattr(torchvision.datasets, dataset.folder).classes)


def test_loading_mnist_does_not_import_torchvision(fake_root):
    import subprocess
    import sys

    code = ("import sys; from harness.data import DATASETS; "
            f"DATASETS['mnist'].load({str(fake_root)!r}, val_size=100, train_limit=300); "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
