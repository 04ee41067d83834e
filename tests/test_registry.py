"""The registries say what the harness needs without building models: their metadata must match the models."""

import pytest

from harness.models import ARCHITECTURES, build_model, localization_parameters


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if "resnext" not in n])
def test_declared_localization_matches_the_model(name):
    model = build_model(name, (1, 28, 28), 10)
    assert bool(localization_parameters(model)) is ARCHITECTURES[name].localization


def test_resnext_family_declares_its_transformer():
    assert ARCHITECTURES["stresnext"].localization and not ARCHITECTURES["resnext"].localization
    assert "pretrained" in ARCHITECTURES["resnext"].options


def test_every_dataset_declares_the_contract_and_its_shape_is_what_it_loads(fake_root):
    from harness.data import DATASETS, Dataset, ImageSplits

    for name, dataset in DATASETS.items():
        assert isinstance(dataset, Dataset), name
        assert dataset.convergence_target is None or 0 < dataset.convergence_target < 1, name
        if name.startswith("cub"):
            continue  # needs its image folder (tests/test_workloads.py builds one)
        splits = dataset.load(fake_root, val_size=50, train_limit=20, test_limit=10)
        assert isinstance(splits, ImageSplits) and splits.in_shape == dataset.in_shape, name
        assert splits.num_classes == dataset.num_classes and splits.task == dataset.task, name
        assert len(splits.train_y) == 20 and len(splits.test_y) == 10 and len(splits.val_y) == 50, name
