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
