"""A trial's identity is what resume, the store and the analysis key on: a refactor must not move it (the plugin
machinery of issue 21 and the typed settings of issue 20 included).
``data/shipped_ids.json`` holds every shipped space's trial ids (plain and at tuned values) and study names as
computed at 24b3692, before the training settings became a typed object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.space import SPACES_DIR, load_space
from harness.tuning import cells, study_name

EXPECTED = json.loads((Path(__file__).parent / "data" / "shipped_ids.json").read_text())


def test_every_shipped_space_is_covered():
    assert set(EXPECTED) == {p.stem for p in SPACES_DIR.glob("*.yaml")} - {"decide_mnist"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_trial_ids_and_study_names_are_unchanged(name):
    space, _ = load_space(name)
    expected = EXPECTED[name]
    assert sorted(t.trial_id for t in space.trials()) == expected["trials"]
    if space.tune is not None:
        studies = [study_name(space, a, d) for a, d in cells(space)]
        assert studies == expected["studies"]
        tuned = {(a, d): {"study": study_name(space, a, d), "params": {"loc_lr": 0.00123}} for a, d in cells(space)}
        assert sorted(t.trial_id for t in space.trials(tuned)) == expected["tuned_trials"]
