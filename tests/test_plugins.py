"""A space's own architectures and datasets: every bad plugin is one line, exit 2, nothing written; identity
hashes the canonical spec (built-ins keep today's ids); plugins reach a worker without the files."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from ray import cloudpickle  # what Ray pickles trainables with (a standalone cloudpickle may be absent)

from harness.cli import stbench
from harness.errors import UserError
from harness.space import load_space, parse_space

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "own_model"
MODEL = """
from torch import nn

def tiny_cnn(in_shape, num_classes, width: int = 16):
    return nn.Sequential(nn.Conv2d(in_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

def wrong(x):
    return nn.Identity()

def not_a_dataset(size=8):
    return object()
"""


def write_space(tmp_path: Path, model: str = MODEL, **space) -> Path:
    (tmp_path / "models.py").write_text(model)
    shutil.copy(EXAMPLE / "data.py", tmp_path / "data.py")
    doc = {"name": "own", "plugins": {"architectures": {"tiny": {"target": "models.py:tiny_cnn"}},
                                      "datasets": {"blobs": {"target": "data.py:Blobs", "options": {"n_train": 300}}}},
           "architectures": ["tiny"], "datasets": {"blobs": {"val_size": 50}}, "wandb": {"mode": "disabled"}}
    for key, value in space.items():
        doc[key] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def refused(tmp_path, capsys, **space) -> str:
    """``stbench run`` on the space: exit 2, one line on stderr, no results directory."""
    results = tmp_path / "results"
    rc = stbench(["run", "--space", str(write_space(tmp_path, **space)), "--results-dir", str(results),
                  "--data-dir", str(tmp_path / "data"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not results.exists(), err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


BAD = {
    "file missing": ({"plugins": {"architectures": {"tiny": {"target": "nope.py:tiny_cnn"}}}},
                     "plugins.architectures.tiny.target: cannot read"),
    "name missing in file": ({"plugins": {"architectures": {"tiny": {"target": "models.py:tiny"}}}},
                             "plugins.architectures.tiny.target: models.py has no 'tiny'; allowed: nn, not_a_dataset, tiny_cnn, wrong"),
    "not a target": ({"plugins": {"architectures": {"tiny": {"target": "models.py"}}}},
                     "plugins.architectures.tiny.target: 'models.py' is not a target; allowed:"),
    "module missing": ({"plugins": {"architectures": {"tiny": {"target": "stbench_no_such_lab.models:net"}}}},
                       "needs the module 'stbench_no_such_lab', which is not installed; fix: pip install stbench_no_such_lab"),
    "wrong signature": ({"plugins": {"architectures": {"tiny": {"target": "models.py:wrong"}}}},
                        "plugins.architectures.tiny.target: wrong(x) has the wrong signature"),
    "option the builder does not take": (
        {"plugins": {"architectures": {"tiny": {"target": "models.py:tiny_cnn", "options": {"depth": 3}}}}},
        "plugins.architectures.tiny.target: tiny_cnn takes no option 'depth'; allowed: width"),
    "model option the builder does not take": ({"model_options": {"tiny": {"depth": 3}}},
                                               "model_options.tiny: unknown option 'depth'; allowed: width"),
    "wrapper option nobody takes": ({"architectures": ["st(tiny)"], "model_options": {"st(tiny)": {"layers": "all"}}},
                                    "model_options.st(tiny): unknown option 'layers'; allowed: width, loc_size"),
    "dataset option the factory does not take": (
        {"plugins": {"datasets": {"blobs": {"target": "data.py:Blobs", "options": {"colour": True}}}}},
        "plugins.datasets.blobs.options: Blobs takes no option 'colour'; allowed: size, n_train"),
    "not a dataset": ({"plugins": {"datasets": {"blobs": {"target": "models.py:not_a_dataset"}}}},
                      "plugins.datasets.blobs.target: object is not a Dataset (it lacks name, task"),
    "unknown architecture": ({"architectures": ["tiny", "st(tinny)"]},
                             "architectures.1: 'st(tinny)' is not allowed; allowed: convnet, stnet, coordconv, "
                             "stcoordconv, resnext, stresnext, coordconv_regressor, conv_regressor, tiny, tv:NAME, "
                             "st(X), coordconv(X), a name in plugins.architectures"),
    "unknown torchvision model": ({"architectures": ["tv:resnet19"]}, "architectures.0: 'tv:resnet19' is not allowed"),
    "unknown dataset": ({"datasets": {"blobz": {}}}, "datasets.blobz: 'blobz' is not allowed; allowed: mnist"),
    "plugin shadows a built-in": ({"plugins": {"architectures": {"convnet": {"target": "models.py:tiny_cnn"}}}},
                                  "plugins.architectures.convnet: 'convnet' is a built-in architecture"),
    "model cannot take the input": ({"architectures": ["tv:vgg11"], "datasets": {"mnist": {}}},
                                    "architectures: tv:vgg11 cannot take datasets.mnist's input 1x28x28 (Given input size"),
    "plugin model cannot take the input": (
        {"architectures": ["tiny", "tv:alexnet"], "plugins": {
            "architectures": {"tiny": {"target": "models.py:tiny_cnn"}},
            "datasets": {"blobs": {"target": "data.py:Blobs", "options": {"size": 16}}}}},
        "architectures: tv:alexnet cannot take datasets.blobs's input 3x16x16"),
    "bad weights": ({"architectures": ["tv:resnet18"], "model_options": {"tv:resnet18": {"weights": "IMAGENET9"}}},
                    "model_options.tv:resnet18.weights: 'IMAGENET9' is not a weight of resnet18; allowed: DEFAULT, IMAGENET1K_V1"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_plugin_is_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    space, expected = BAD[case]
    assert expected in refused(tmp_path, capsys, **space)


def test_missing_package_through_python_m_harness(tmp_path):
    """The same line from ``python -m harness run``, run from another directory."""
    space = write_space(tmp_path, plugins={"architectures": {"tiny": {"target": "stbench_no_such_lab.models:net"}}})
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--space", str(space), "--results-dir", "results"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and not (tmp_path / "results").exists()
    assert done.stderr.strip().splitlines() == [
        f"error: {space}: plugins.architectures.tiny.target: 'stbench_no_such_lab.models:net' needs the module "
        "'stbench_no_such_lab', which is not installed; fix: pip install stbench_no_such_lab"]


def _ids(path: Path) -> dict[str, str]:
    return {t.architecture: t.trial_id for t in load_space(path)[0].trials()}


def test_identity_is_the_canonical_spec_not_the_label(tmp_path):
    a = _ids(write_space(tmp_path / "a" if (tmp_path / "a").mkdir() is None else None,
                         architectures=["tiny", "st(tiny)", "coordconv(tiny)"]))
    # another label for the same file and function, the default spelled out: the same ids
    b_dir = tmp_path / "b"; b_dir.mkdir()
    b = _ids(write_space(b_dir, plugins={"architectures": {"mine": {"target": "models.py:tiny_cnn"}},
                                         "datasets": {"blobs": {"target": "data.py:Blobs", "options": {"n_train": 300}}}},
                         architectures=["mine", "st(mine)", "coordconv(mine)"],
                         model_options={"coordconv(mine)": {"layers": "first", "width": 16}}))
    assert [a["tiny"], a["st(tiny)"], a["coordconv(tiny)"]] == [b["mine"], b["st(mine)"], b["coordconv(mine)"]]
    assert len(set(a.values())) == 3
    # the code's text is provenance, not identity; a changed default is identity
    c_dir = tmp_path / "c"; c_dir.mkdir()
    assert _ids(write_space(c_dir, model=MODEL + "\n# a comment\n"))["tiny"] == a["tiny"]
    d_dir = tmp_path / "d"; d_dir.mkdir()
    assert _ids(write_space(d_dir, model=MODEL.replace("width: int = 16", "width: int = 32")))["tiny"] != a["tiny"]
    # pretrained weights resolved: DEFAULT and its concrete name are the same model
    e_dir = tmp_path / "e"; e_dir.mkdir()
    e = {t.model_options["weights"]: t.trial_id for name in ("DEFAULT", "IMAGENET1K_V1") for t in load_space(
        write_space(e_dir, architectures=["tv:resnet18"], model_options={"tv:resnet18": {"weights": name}}))[0].trials()}
    assert e["DEFAULT"] == e["IMAGENET1K_V1"]


def test_fingerprints_are_recorded_not_hashed(tmp_path):
    from harness import plugins

    load_space(write_space(tmp_path))
    prints = plugins.fingerprints()
    assert prints["architectures.tiny"]["file"] == "models.py" and len(prints["architectures.tiny"]["sha256"]) == 64
    assert "source" not in prints["architectures.tiny"]
    parse_space("name: t\narchitectures: [convnet]\ndatasets: {mnist: {}}")
    assert plugins.active() == {} and plugins.fingerprints() == {}  # a space without plugins clears them


def test_plugins_reach_a_worker_without_the_files(tmp_path):
    """What Ray pickles for the trainable carries the files' text: a fresh process with the files deleted
    builds the model and loads the data."""
    from harness import plugins

    load_space(write_space(tmp_path, architectures=["st(tiny)"]))
    blob = cloudpickle.dumps(plugins.carry(json.dumps))
    for f in ("models.py", "data.py", "space.yaml"):
        (tmp_path / f).unlink()
    worker = textwrap.dedent("""
        import sys
        from ray import cloudpickle
        from harness.data import DATASETS
        from harness.models import build_model
        fn = cloudpickle.loads(sys.stdin.buffer.read())
        assert fn({"x": 1}) == '{"x": 1}'
        splits = DATASETS["blobs"].load(None, val_size=50)
        model = build_model("st(tiny)", splits.in_shape, splits.num_classes)
        print(tuple(model(splits.train_x[:2]).shape), splits.n_train)
    """)
    done = subprocess.run([sys.executable, "-c", worker], input=blob, capture_output=True, cwd="/",
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().split() == ["(2,", "4)", "250"]


def test_carry_is_the_trainable_itself_without_plugins():
    from harness import plugins

    parse_space("name: t\narchitectures: [convnet]\ndatasets: {mnist: {}}")
    assert plugins.carry(json.dumps) is json.dumps


def test_entry_points_only_the_named_ones_load(tmp_path, monkeypatch):
    """An installed package's ``stbench.architectures`` / ``stbench.datasets`` entry points: named in a space
    without a plugins section; an entry point the space does not name is never imported."""
    pkg = tmp_path / "site" / "stbench_lab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(MODEL + "\nfrom .data import Blobs\nBLOBS = Blobs(n_train=300)\n")
    shutil.copy(EXAMPLE / "data.py", pkg / "data.py")
    (pkg / "broken.py").write_text("raise RuntimeError('never imported')\n")
    dist = tmp_path / "site" / "stbench_lab-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stbench-lab\nVersion: 0.3\n")
    (dist / "top_level.txt").write_text("stbench_lab\n")
    (dist / "entry_points.txt").write_text("[stbench.architectures]\nlabnet = stbench_lab:tiny_cnn\n"
                                           "broken = stbench_lab.broken:net\n"
                                           "[stbench.datasets]\nlabblobs = stbench_lab:BLOBS\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from harness import plugins

    space = parse_space("name: t\narchitectures: [labnet, 'coordconv(labnet)']\ndatasets: {labblobs: {val_size: 50}}")
    assert [t.architecture for t in space.trials()] == ["labnet", "coordconv(labnet)"]
    assert plugins.fingerprints()["architectures.labnet"] == {"module": "stbench_lab", "packages": {"stbench-lab": "0.3"}}
    assert "stbench_lab.broken" not in sys.modules
    with pytest.raises(UserError, match="'broken' is not allowed|importing 'stbench_lab.broken:net' failed"):
        parse_space("name: t\narchitectures: [broken]\ndatasets: {labblobs: {val_size: 50}}")


ITEM_MODEL = MODEL + """

class Thresholded(nn.Module):
    '''Data-dependent control flow: runs, but not on the meta device and not under vmap.'''

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        if x.abs().max().item() > 100:
            x = x / 100
        return self.head(x.flatten(1))


def thresholded(in_shape, num_classes):
    return Thresholded(in_shape, num_classes)
"""


def test_a_model_that_cannot_be_stacked_is_refused_in_one_line(tmp_path, capsys):
    """Its plain forward needs real values (checked on the CPU instead of the meta device, and accepted); a
    stack of 2 cannot run it under vmap: refused before Ray, naming the setting."""
    plugins_ = {"architectures": {"thr": {"target": "models.py:thresholded"}},
                "datasets": {"blobs": {"target": "data.py:Blobs", "options": {"n_train": 300}}}}
    err = refused(tmp_path, capsys, model=ITEM_MODEL, plugins=plugins_, architectures=["thr"],
                  datasets={"blobs": {"val_size": 50, "stack": 2}})
    assert "training.stack: thr cannot be trained as a stack of 2 seeds on blobs (vmap: It looks like you're " \
           "calling .item()" in err and "allowed: stack: 1 for it (datasets.blobs.stack: 1)" in err
    from harness import plugins

    plugins.check_inputs([("thr", "blobs", {})], stack={"blobs": 1})  # unstacked it is fine


def test_a_stack_of_two_batchnorm_user_models_trains_each_seed_as_alone(tmp_path):
    """Seed stacking for a user model with BatchNorm (running statistics are per-seed buffers under vmap):
    each seed of a stack of 2 ends where it ends trained alone (rounding-level differences only)."""
    import torch

    from harness.data import DATASETS
    from harness.stacked import StackedTrainer
    from harness.train import Trainer

    space = load_space(write_space(tmp_path, architectures=["coordconv(tiny)"],
                                   datasets={"blobs": {"val_size": 50, "epochs": 2, "train_limit": 96,
                                                       "batch_size": 32, "seeds": 2, "stack": 2}}))[0]
    from harness import plugins

    plugins.check_inputs(plugins.pairs_to_check(space.trials()), stack=space.stack_sizes("cpu"))
    trial = space.trials()[0].with_seeds([0, 1])
    splits = DATASETS["blobs"].load(None, val_size=50, train_limit=96)
    stacked = StackedTrainer(trial, splits)
    per_epoch = list(stacked.run())
    for i, seed in enumerate((0, 1)):
        alone = Trainer(trial.with_seeds([seed]), splits)
        metrics = list(alone.run())
        for mine, theirs in zip(per_epoch, metrics):
            assert mine[seed].train_loss == pytest.approx(theirs[seed].train_loss, rel=1e-4, abs=1e-5)
        state, reference = stacked.seed_state_dict(i), alone.model.state_dict()
        assert any("running_mean" in k for k in state)
        for k, v in reference.items():
            if v.dtype.is_floating_point:
                torch.testing.assert_close(state[k], v, rtol=1e-3, atol=1e-4, msg=k)


def test_st_of_any_model_gets_the_localization_learning_rate_and_can_be_tuned(tmp_path):
    from harness.contract import TrainingSettings
    from harness.models import build_model
    from harness.train import build_optimizer

    space = load_space(write_space(tmp_path, architectures=["tiny", "st(tiny)", "st(tv:resnet18)"],
                                   tune={"loc_lr": {"low": 1e-4, "high": 1e-2}, "trials": 2}))[0]
    assert space.tune.architectures == ["st(tiny)", "st(tv:resnet18)"]
    model = build_model("st(tv:resnet18)", (3, 32, 32), 4)
    optimizer = build_optimizer(model, TrainingSettings(optimizer="sgd", lr=0.1, loc_lr=0.001))
    by_lr = {g["lr"]: sum(p.numel() for p in g["params"]) for g in optimizer.param_groups}
    assert by_lr[0.001] == sum(p.numel() for p in model.stn.parameters())
    assert by_lr[0.1] == sum(p.numel() for p in model.classifier.parameters())


def test_a_plugin_dataset_is_identified_by_its_target_and_options_not_its_label(tmp_path):
    def ids(sub, blobs, label="blobs"):
        (tmp_path / sub).mkdir()
        path = write_space(tmp_path / sub, datasets={label: {"val_size": 50}}, plugins={
            "architectures": {"tiny": {"target": "models.py:tiny_cnn"}}, "datasets": {label: blobs}})
        return [t.trial_id for t in load_space(path)[0].trials()]

    base = ids("a", {"target": "data.py:Blobs", "options": {"n_train": 300}})
    assert ids("b", {"target": "data.py:Blobs", "options": {"n_train": 300, "size": 32}}) == base  # a default
    assert ids("c", {"target": "data.py:Blobs", "options": {"n_train": 300}}, label="squares") == base
    assert ids("d", {"target": "data.py:Blobs", "options": {"n_train": 300, "size": 16}}) != base


@pytest.mark.slow
def test_changed_plugin_code_is_flagged_and_retry_stale_reruns_it(tmp_path, capsys, ray_local):
    """In a Ray that was already running (a notebook's, the tests'): the plugin still reaches the workers.
    A result keeps its id when the file's text changes (a comment), is flagged as run by other code, and
    ``--retry-stale`` trains it again in place: still one row, now from the new run."""
    from harness.store import ResultsStore

    space = write_space(tmp_path, datasets={"blobs": {"val_size": 50, "epochs": 1, "train_limit": 64, "test_limit": 50}})
    args = ["run", "--space", str(space), "--results-dir", str(tmp_path / "results"), "--data-dir",
            str(tmp_path / "data"), "--quiet"]
    assert stbench(args) == 0
    first = ResultsStore(tmp_path / "results").trials()
    assert len(first) == 1 and first.status.iloc[0] == "complete"
    assert stbench(args) == 0 and "1 already in" in capsys.readouterr().out
    (tmp_path / "models.py").write_text(MODEL + "\n# edited\n")
    assert stbench(args) == 0
    out = capsys.readouterr().out
    assert "warning: 1 finished trial(s) ran other plugin code than now" in out and "1 already in" in out
    assert stbench([*args, "--retry-stale"]) == 0
    out = capsys.readouterr().out
    assert "running them again (--retry-stale)" in out and "1 to run" in out
    after = ResultsStore(tmp_path / "results").trials()
    assert len(after) == 1 and after.trial_id.iloc[0] == first.trial_id.iloc[0]
    assert after.run_id.iloc[0] != first.run_id.iloc[0] and after.status.iloc[0] == "complete"
    assert stbench(args) == 0 and "warning" not in capsys.readouterr().out


def test_wrappers_are_compared_with_what_they_wrap(tmp_path):
    from harness.baselines import comparisons

    archs = ["convnet", "tiny", "st(tiny)", "coordconv(tiny)", "st(coordconv(tiny))", "stnet"]
    assert comparisons(archs) == [("tiny", "convnet"), ("st(tiny)", "convnet"), ("st(tiny)", "tiny"),
                                  ("coordconv(tiny)", "convnet"), ("coordconv(tiny)", "tiny"),
                                  ("st(coordconv(tiny))", "convnet"), ("st(coordconv(tiny))", "coordconv(tiny)"),
                                  ("stnet", "convnet")]
    assert comparisons(["tiny", "st(tiny)"], named={"st(tiny)": ["tiny"]}) == [("st(tiny)", "tiny")]
    space = load_space(write_space(tmp_path, architectures=["tiny", "st(tiny)"], baselines={"st(tiny)": "tiny"}))[0]
    assert comparisons(space.architectures, named=space.baselines) == [("st(tiny)", "tiny")]
    with pytest.raises(UserError, match=r"baselines.st\(tiny\): convnet is not among the space's architectures"):
        load_space(write_space(tmp_path, architectures=["tiny", "st(tiny)"], baselines={"st(tiny)": "convnet"}))


def test_plan_refuses_a_model_that_cannot_take_the_input_as_a_run_does(tmp_path, capsys):
    space = write_space(tmp_path, architectures=["tv:vgg11"], datasets={"mnist": {}})
    rc = stbench(["plan", "--space", str(space), "--results-dir", str(tmp_path / "results"),
                  "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "tv:vgg11 cannot take datasets.mnist's input 1x28x28" in err
