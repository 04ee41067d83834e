"""The added workloads: distorted MNIST, Not-so-Clevr regression (generators, loaders, one training step each)."""

import pytest
import torch

from conftest import epoch_records

from harness.data import DATASETS
from harness.data.distorted import KINDS, distort
from harness.models import build_model
from harness.trial import Trial
from harness.train import Trainer

ARCHS = ["convnet", "stnet", "coordconv", "stcoordconv"]


def _digits(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 6:22, 12:16] = 255  # a bar: enough to see where it went
    return images | torch.randint(0, 30, (n, 28, 28), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("kind", list(KINDS))
def test_distortion_is_deterministic_and_batch_independent(kind, monkeypatch):
    images = _digits()
    a = distort(images, kind, torch.Generator().manual_seed(3))
    b = distort(images, kind, torch.Generator().manual_seed(3))
    monkeypatch.setattr("harness.data.distorted.BATCH", 7)
    c = distort(images, kind, torch.Generator().manual_seed(3))
    side = KINDS[kind]
    assert a.shape == (40, side, side) and a.dtype == torch.uint8
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, distort(images, kind, torch.Generator().manual_seed(4)))
    assert a.float().mean() > 5  # the digit survives the warp


def test_distortions_change_the_images():
    images = _digits()
    for kind in ("r", "p", "e"):
        assert (distort(images, kind, torch.Generator().manual_seed(0)).float() - images.float()).abs().mean() > 1


@pytest.mark.parametrize("name,side", [("mnist_r", 28), ("mnist_rts", 42), ("mnist_p", 28), ("mnist_e", 28)])
def test_distorted_loader_caches_and_trains_each_model(fake_root, monkeypatch, tmp_path, name, side):
    monkeypatch.setenv("STBENCH_CACHE_DIR", str(tmp_path / "cache"))
    dataset = DATASETS[name]
    dataset.prepare(fake_root, download=False)
    cached = list((tmp_path / "cache").glob(f"{name}-*.pt"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    splits = dataset.load(fake_root, val_size=100, train_limit=64, test_limit=50)
    again = dataset.load(fake_root, val_size=100, train_limit=64, test_limit=50)
    assert torch.equal(splits.train_x, again.train_x) and torch.equal(splits.test_y, again.test_y)
    assert splits.in_shape == (1, side, side) and splits.num_classes == 10
    assert len(splits.train_y) == 64 and len(splits.val_y) == 100 and len(splits.test_y) == 50
    assert dataset.split_sizes(fake_root) == (600, 200)
    for arch in ARCHS:
        _train_one_epoch(arch, name, splits)


def _train_one_epoch(arch, dataset, splits, **training):
    trial = Trial(arch, dataset, seeds=(0,), training={"epochs": 1, "batch_size": 32, "optimizer": "sgd", "lr": 0.01,
                                                       "momentum": 0.5, "weight_decay": 0.0, **training})
    metrics = epoch_records(Trainer(trial, splits))[-1]
    assert metrics["status"] == "complete" and 0 <= metrics["test_acc"] <= 1
    return metrics


def test_distorted_cache_falls_back_when_the_data_folder_is_read_only(tmp_path, monkeypatch):
    from harness.data.distorted import cache_dir

    monkeypatch.delenv("STBENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir(tmp_path) == tmp_path / "stbench-cache"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert cache_dir(ro) == tmp_path / "home" / ".cache" / "stbench"
    finally:
        ro.chmod(0o755)


# -- Not-so-Clevr: regression ------------------------------------------------------------------------
def test_clevr_has_every_centre_once_and_the_exact_quadrant_split():
    from harness.data.clevr import centres, render, split_mask

    points = centres()
    assert points.shape == (3136, 2) and len({tuple(p) for p in points.tolist()}) == 3136
    assert points.min() == 4 and points.max() == 59
    images = render(points[:5])
    assert images.shape == (5, 1, 64, 64) and torch.all(images.sum((1, 2, 3)) == 81)
    x, y = points[0].long().tolist()
    assert images[0, 0, y - 4:y + 5, x - 4:x + 5].min() == 1  # the square is centred on its target
    test = split_mask("quadrant", points)
    assert int(test.sum()) == 729 and int((~test).sum()) == 2407
    assert torch.all(points[test] > 32) and not torch.any((points[~test] > 32).all(1))
    assert DATASETS["clevr_quadrant"].split_sizes(None) == (2407, 729)
    assert DATASETS["clevr_uniform"].split_sizes(None) == (2509, 627)
    assert torch.equal(split_mask("uniform", points), split_mask("uniform", points))


@pytest.mark.parametrize("name", ["clevr_uniform", "clevr_quadrant"])
def test_clevr_loader_carves_validation_from_train(name):
    dataset = DATASETS[name]
    splits = dataset.load(None, val_size=200, split_seed=1)
    n_train, n_test = dataset.split_sizes(None)
    assert len(splits.train_y) == n_train - 200 and len(splits.val_y) == 200 and len(splits.test_y) == n_test
    seen = {tuple(p) for p in torch.cat([splits.train_y, splits.val_y]).tolist()}
    assert len(seen) == n_train and not seen & {tuple(p) for p in splits.test_y.tolist()}
    assert splits.in_shape == (1, 64, 64) and splits.num_classes == dataset.target_dim == 2
    assert splits.task.name == "regression" and splits.train_y.dtype == torch.float32


def test_regression_task_scores_exact_pixels():
    from harness.data.clevr import TASK

    y = torch.tensor([[4.0, 59.0], [30.0, 31.0]])
    scaled = (y - TASK.offset) / TASK.scale
    assert TASK.loss(scaled, y).item() == pytest.approx(0.0, abs=1e-9)
    assert torch.equal(TASK.predict(scaled), y) and TASK.correct(scaled, y).item() == 2
    off = scaled + torch.tensor([[0.0, 0.6 / TASK.scale], [0.4 / TASK.scale, 0.0]])
    assert TASK.correct(off, y).item() == 1  # 0.6 px rounds to the wrong pixel, 0.4 px to the right one
    assert TASK.loss(off, y, reduction="sum").item() == pytest.approx(TASK.loss(off, y).item() * 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_models_train_one_step_on_clevr(arch):
    splits = DATASETS["clevr_quadrant"].load(None, val_size=100, train_limit=64, test_limit=40)
    metrics = _train_one_epoch(arch, "clevr_quadrant", splits)
    assert metrics["train_loss"] > 0 and metrics["test_loss"] > 0


def test_dropout_option_defaults_on_and_keeps_trial_ids():
    from harness.models.convnet import ConvNet

    assert build_model("convnet", (1, 28, 28), 10).dropout is True
    assert isinstance(build_model("coordconv", (1, 64, 64), 2, dropout=False).conv2_drop, torch.nn.Identity)
    assert ConvNet().dropout


# -- CUB-200-2011: DataLoader-fed, ResNeXt ------------------------------------------------------------
def write_fake_cub(root, per_class=4, classes=3, size=(40, 30)):
    """A tiny CUB_200_2011 folder: coloured images, half of each class in the official train split."""
    from PIL import Image

    cub = root / "CUB_200_2011"
    lines = {k: [] for k in ("images", "labels", "split", "boxes", "classes")}
    image_id = 0
    for c in range(1, classes + 1):
        name = f"{c:03d}.Bird_{c}"
        lines["classes"].append(f"{c} {name}")
        (cub / "images" / name).mkdir(parents=True)
        for k in range(per_class):
            image_id += 1
            rel = f"{name}/bird_{image_id}.{'png' if k % 2 else 'jpg'}"
            Image.new("RGB", size, (60 * c, 255 - 60 * c, 30 * k)).save(cub / "images" / rel)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c}")
            lines["split"].append(f"{image_id} {int(k < per_class // 2 + 1)}")
            lines["boxes"].append(f"{image_id} 5.0 4.0 20.0 15.0")
    for key, fname in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                       ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt"), ("classes", "classes.txt")):
        (cub / fname).write_text("\n".join(lines[key]) + "\n")
    return root


@pytest.mark.parametrize("bbox", [False, True])
def test_cub_loader_uses_the_official_split(tmp_path, bbox):
    from harness.data.cub import CUB

    write_fake_cub(tmp_path)
    dataset = CUB("cub_test", bbox_crop=bbox, image_size=32, num_workers=0)
    dataset.prepare(tmp_path, download=False)
    assert dataset.split_sizes(tmp_path) == (9, 3)
    splits = dataset.load(tmp_path, val_size=2, split_seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7, 2, 3)
    assert splits.num_classes == 3 and splits.in_shape == (3, 32, 32) and splits.classes[0] == "001.Bird_1"
    x, y = next(iter(splits.eval_batches("test", 8)))
    assert x.shape == (3, 3, 32, 32) and sorted(y.tolist()) == [0, 1, 2]
    xb, yb = next(iter(splits.train_batches(4, seed=0)))
    assert xb.shape == (4, 3, 32, 32) and yb.dtype == torch.int64


def test_cub_missing_files_are_one_line(tmp_path):
    from harness.data.cub import CUB
    from harness.errors import UserError

    with pytest.raises(UserError, match="missing images.txt.*CUB_200_2011") as err:
        CUB("cub200").prepare(tmp_path, download=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("arch", ["resnext", "stresnext"])
def test_resnext_models_train_one_step_through_the_dataloader_path(tmp_path, arch):
    from harness.data.cub import CUB
    from harness.models import localization_parameters

    write_fake_cub(tmp_path)
    splits = CUB("cub_test", image_size=32, num_workers=0).load(tmp_path, val_size=2)
    model = build_model(arch, splits.in_shape, splits.num_classes)
    assert bool(localization_parameters(model)) == (arch == "stresnext")
    if arch == "stresnext":  # identity at initialisation: the classifier sees the input unchanged
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(model.transform(x), x, atol=1e-5)
    metrics = _train_one_epoch(arch, "cub200", splits, batch_size=4)
    assert metrics["train_loss"] > 0


def test_resnext_takes_other_channel_counts_and_pretrained_is_an_option():
    from harness.space import parse_space

    model = build_model("resnext", (1, 32, 32), 5)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    space = parse_space("name: t\narchitectures: [stresnext]\ndatasets: {cub200: {}}\n"
                        "model_options: {stresnext: {pretrained: true, loc_size: 48}}")
    assert space.trials()[0].model_options == {"pretrained": True, "loc_size": 48}  # built only in a trial
