"""The reference study's protocol (its splits) and the report's Reproduction section."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from analysis import reproduction as R
from harness.data import DATASETS
from harness.data.mnist import MNIST_MEAN, MNIST_STD, study_test_halves
from harness.errors import UserError
from harness.space import load_space, parse_space
from harness.train import load_splits
from harness.trial import identity_training

# The study's evaluation half of the official test set: random_split(test, [5000, 5000],
# generator=torch.Generator().manual_seed(42)), first part. Pinned so that a change in torch's CPU generator
# (which would silently move our evaluation set away from the study's) fails here.
STUDY_FIRST_INDICES = [7542, 8214, 3698, 2841, 8086, 2550, 2282, 7599, 1462, 2026]
STUDY_TEST_FIRST_INDICES = [6706, 5069, 5862, 223, 3000, 3790, 9562, 9636, 3743, 5381]
STUDY_SET_SHA256 = "aa94b44a16f6271089938b644b830eac344e8172e87c722be696ab5ba9594216"  # sorted int64 little-endian
STUDY_SET_SUM = 24997005


def test_the_study_split_is_pinned():
    val, test = study_test_halves(10_000)
    assert val[:10].tolist() == STUDY_FIRST_INDICES and test[:10].tolist() == STUDY_TEST_FIRST_INDICES
    digest = hashlib.sha256(torch.sort(val).values.numpy().astype("<i8").tobytes()).hexdigest()
    assert digest == STUDY_SET_SHA256 and int(val.sum()) == STUDY_SET_SUM
    assert len(val) == len(test) == 5000 and set(val.tolist()).isdisjoint(test.tolist())
    # the very call the study made gives the same halves
    a, b = torch.utils.data.random_split(range(10_000), [5000, 5000], generator=torch.Generator().manual_seed(42))
    assert list(a.indices) == val.tolist() and list(b.indices) == test.tolist()


def test_real_mnist_study_protocol_uses_the_pinned_halves(mnist_root):
    if "shared" not in str(mnist_root):
        pytest.skip("the real MNIST is not here")
    splits = DATASETS["mnist"].load(mnist_root, val_size=5000, protocol="study")
    assert len(splits.train_y) == 60_000 and len(splits.val_y) == 5000 and len(splits.test_y) == 5000
    raw = DATASETS["mnist"].torchvision_class(root=str(mnist_root), train=False, download=False)
    first = raw.data[STUDY_FIRST_INDICES[0]].float().div(255).sub(MNIST_MEAN).div(MNIST_STD)
    assert torch.equal(splits.val_x[0, 0], first)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_study_protocol_trains_on_everything_and_halves_the_test_set(fake_root, name):
    dataset = DATASETS[name]
    splits = dataset.load(fake_root, val_size=100, protocol="study")  # fake: 600 train, 200 test
    assert len(splits.train_y) == 600 and len(splits.val_y) == 100 and len(splits.test_y) == 100
    raw = dataset.torchvision_class(root=str(fake_root), train=False, download=False)
    val_idx, test_idx = study_test_halves(200)
    assert torch.equal(splits.val_y, raw.targets[val_idx].long()) and torch.equal(splits.test_y, raw.targets[test_idx].long())
    # MNIST's constants for both datasets, as the study normalised them
    assert splits.train_x.min().item() == pytest.approx((0 - MNIST_MEAN) / MNIST_STD, rel=1e-4)
    cut = dataset.load(fake_root, val_size=100, train_limit=50, test_limit=20, protocol="study")
    assert (len(cut.train_y), len(cut.val_y), len(cut.test_y)) == (50, 20, 20)
    assert torch.equal(cut.val_y, splits.val_y[:20])


def test_the_protocol_reaches_the_loader_and_is_checked_per_dataset(fake_root):
    space = parse_space("name: t\narchitectures: [convnet]\ntraining: {protocol: study, val_size: 100}\n"
                        "datasets: {fashion_mnist: {}}\n")
    trial = space.trials()[0]
    splits = load_splits(trial, fake_root)
    assert len(splits.train_y) == 600 and len(splits.test_y) == 100
    with pytest.raises(UserError, match=r"datasets.clevr_quadrant.protocol: 'study' is not defined .* allowed: standard$"):
        parse_space("name: t\narchitectures: [convnet]\ntraining: {protocol: study}\ndatasets: {clevr_quadrant: {}}\n")
    with pytest.raises(UserError, match=r"protocol: 'paper' is not allowed; allowed: standard, study"):
        parse_space("name: t\narchitectures: [convnet]\ntraining: {protocol: paper}\ndatasets: {mnist: {}}\n")


def test_the_default_protocol_keeps_existing_trial_ids():
    import dataclasses

    trial = parse_space("name: t\narchitectures: [convnet]\ndatasets: {mnist: {}}\n").trials()[0]
    before = {k: v for k, v in trial.training.as_dict().items() if k != "protocol"}
    assert dataclasses.replace(trial, training=before).trial_id == trial.trial_id
    assert "protocol" not in identity_training(trial.training)
    study = parse_space("name: t\narchitectures: [convnet]\ntraining: {protocol: study}\ndatasets: {mnist: {}}\n").trials()[0]
    assert study.trial_id != trial.trial_id


def test_the_study_spaces_validate():
    seed, _ = load_space("seed")
    assert seed.architectures == ["convnet", "stnet", "coordconv", "stcoordconv"]
    mnist, fashion = seed.training_for("mnist"), seed.training_for("fashion_mnist")
    assert (mnist.protocol, mnist.epochs, mnist.seed_list(), mnist.lr) == ("study", 20, list(range(10)), 0.005)
    assert (fashion.epochs, len(fashion.seed_list()), fashion.lr) == (30, 5, 0.01)
    assert (mnist.optimizer, mnist.momentum, mnist.batch_size) == ("sgd", 0.0, 64)
    assert len(seed.trials()) == 4 * (10 + 5)
    birds, _ = load_space("birds_seed")
    t = birds.training_for("cub200")
    assert (t.protocol, t.optimizer, t.lr, t.batch_size, t.epochs) == ("study", "adam", 0.001, 8, 20)


def test_cub_study_split_is_80_10_10_seeded_and_disjoint(tmp_path):
    from harness.data.cub import CUB, _table, study_split
    from test_workloads import write_fake_cub

    write_fake_cub(tmp_path, per_class=10, classes=3)  # 30 images
    images = _table(tmp_path / "CUB_200_2011" / "images.txt")
    fit, val, test = study_split(images)
    assert (len(fit), len(val), len(test)) == (24, 3, 3)
    assert set(fit) | set(val) | set(test) == set(images) and len(set(fit) | set(val) | set(test)) == 30
    assert study_split(images) == (fit, val, test)
    splits = CUB("cub_test", image_size=32, num_workers=0).load(tmp_path, val_size=2, protocol="study")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 3, 3)


# -- the comparison ----------------------------------------------------------------------------------
def test_compare_matches_the_pooled_t_test_and_the_prediction_test():
    x, y = [0.97, 0.975, 0.98], [0.98, 0.981, 0.983, 0.979, 0.985]
    c = R.compare(x, y)
    assert c.test == "t" and c.p == pytest.approx(sps.ttest_ind(x, y, equal_var=True).pvalue)
    assert c.diff == pytest.approx(np.mean(x) - np.mean(y)) and c.in_sds == pytest.approx(c.diff / np.std(y, ddof=1))
    one = R.compare([0.99], y)
    t = (0.99 - np.mean(y)) / (np.std(y, ddof=1) * np.sqrt(1 + 1 / 5))
    assert one.test == "prediction t" and one.p == pytest.approx(2 * sps.t.sf(abs(t), 4))
    assert np.isnan(R.compare([], y).p) and R.compare([], y).decision == R.NONE
    far = R.compare([0.90, 0.91], y).verdict()
    assert far.startswith("outside:") and "below" in far and "n = 2 vs 5" in far


def test_equivalence_is_two_one_sided_pooled_t_tests_as_scipy_computes_them():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.98, 0.002, 6), rng.normal(0.98, 0.002, 10)
    for margin in (0.001, 0.003, 0.01):
        c = R.compare(x, y, margin)
        above = sps.ttest_ind(x + margin, y, equal_var=True, alternative="greater").pvalue  # H0: diff ≤ −margin
        below = sps.ttest_ind(x - margin, y, equal_var=True, alternative="less").pvalue  # H0: diff ≥ +margin
        assert c.margin == margin and c.p_equivalent == pytest.approx(max(above, below))
    assert R.compare(x, y).margin == pytest.approx(max(np.std(y, ddof=1), R.MIN_MARGIN)) == R.MIN_MARGIN
    wide = rng.normal(0.9, 0.03, 10)
    assert R.compare(x, wide).margin == pytest.approx(np.std(wide, ddof=1))  # one study SD above the floor
    y0 = y - y.mean() + 0.98
    same = R.compare(y0, y0, 0.005)
    assert same.decision == R.EQUIVALENT and same.verdict().startswith("equivalent within ±0.50 pts")
    few = R.compare(y0[:2], y0)
    assert few.decision == R.INCONCLUSIVE and few.verdict().startswith("inconclusive: not shown outside")


def test_no_spread_on_either_side_gives_no_p_value():
    for ours in ([0.98, 0.98], [0.99, 0.99], [0.99]):
        c = R.compare(ours, [0.98, 0.98, 0.98])
        assert np.isnan(c.p) and np.isnan(c.p_equivalent) and c.decision == R.INCONCLUSIVE
        assert "no spread on either side" in c.verdict()


@pytest.mark.parametrize("m,n", [(1, 10), (2, 2), (3, 3), (5, 5), (10, 10), (2, 10), (3, 5)])
def test_the_verdict_calls_a_true_reproduction_outside_about_5_percent_of_the_time(m, n):
    """Both sides drawn from one normal: the rate of 'outside' verdicts must be the test's size, 5 %
    (Welch's test fails this at m = 2, n = 10 with ~10 %, which is why the pooled test is used)."""
    rng = np.random.default_rng(m * 100 + n)
    reps = 20_000
    assert 0.04 <= _decision_rates(m, n, 0.0, reps, rng)[R.OUTSIDE] <= 0.06


def _decision_rates(m, n, shift, reps, rng, sd=0.01):
    """Fractions of outside / equivalent / inconclusive, through the production functions (``pooled_tests`` and
    ``decisions`` are what ``compare`` calls), many samples at once. Our m runs are shifted by ``shift`` margins,
    the margin being the one the study published (its sample SD, ≥ 0.5 pp): a fixed number once the study is out,
    so the truth is put at that number times ``shift``."""
    y = rng.normal(0.9, sd, (reps, n))
    margin = np.maximum(y.std(-1, ddof=1), R.MIN_MARGIN)  # default_margin, per sample
    x = rng.normal(0.9, sd, (reps, m)) + shift * margin[:, None]
    d = R.decisions(*R.pooled_tests(x, y, margin)[1:])
    return {k: float(np.mean(d == k)) for k in (R.OUTSIDE, R.EQUIVALENT, R.INCONCLUSIVE)}


def test_three_way_decisions_by_simulation():
    """'Equivalent' is wrongly claimed at most α of the time when the truth sits on the margin (one study SD), and
    at 2 runs against 10 a shift of one SD mostly reads 'inconclusive', never 'within'. ``-s`` prints the grid."""
    rng = np.random.default_rng(7)
    reps = 20_000
    one = R.compare(x := rng.normal(0.9, 0.01, 3), y := rng.normal(0.9, 0.01, 10))
    assert one.decision == R.decisions(*R.pooled_tests(x, y, R.default_margin(y))[1:])
    print("\nreproduction decisions (study n = 10, SD 1 pp; margin = the study's sample SD), fractions:")
    print(f"{'ours':>5} {'shift/margin':>12} {'outside':>8} {'equiv.':>7} {'inconcl.':>8}")
    for m in (1, 2, 3, 5, 10, 30):
        for shift in (0.0, 1.0, 2.0):
            r = _decision_rates(m, 10, shift, reps, rng)
            print(f"{m:>5} {shift:>12.1f} {r[R.OUTSIDE]:>8.3f} {r[R.EQUIVALENT]:>7.3f} {r[R.INCONCLUSIVE]:>8.3f}")
            se = math.sqrt(0.05 * 0.95 / reps)
            if shift >= 1.0:  # on or beyond the margin: 'equivalent' is the error
                assert r[R.EQUIVALENT] <= 0.05 + 3 * se, (m, shift, r)
            if m <= 3:
                assert r[R.EQUIVALENT] < 0.05, (m, shift, r)  # 2–3 runs almost never show equivalence
            if m == 2 and shift == 1.0:
                assert 0.15 < r[R.OUTSIDE] < 0.25 and r[R.INCONCLUSIVE] > 0.7  # ~80 % once read as "within"
            if shift == 0.0 and m in (10, 30):  # the README: about a third at 10 runs, three in five at 30
                assert (0.28 < r[R.EQUIVALENT] < 0.42) if m == 10 else (0.55 < r[R.EQUIVALENT] < 0.68), (m, r)


def _ours_from_reference(ref, dataset, arch, runs, epochs, shift=0.0):
    rows = ref[(ref.dataset == dataset) & (ref.architecture == arch) & ref.run.isin(runs) & (ref.epoch <= epochs)]
    per_epoch = rows.groupby("run").elapsed_s.diff().fillna(rows.elapsed_s).values  # seconds of each epoch
    return pd.DataFrame({"trial_id": [f"{arch}-{r}" for r in rows.run], "dataset": dataset, "architecture": arch,
                         "seed": rows.run.values, "epoch": rows.epoch.values, "val_acc": rows.accuracy.values + shift,
                         "train_time_s": per_epoch * 0.9, "eval_time_s": per_epoch * 0.1})


def test_the_study_compared_with_itself_is_within_its_spread_and_a_shift_is_not():
    ref = R.reference()
    assert len(ref) == 1560 and ref.groupby(["dataset", "architecture"]).run.nunique().sum() == 68
    ours = pd.concat([_ours_from_reference(ref, "mnist", a, range(1, 11), 20) for a in ("convnet", "stnet")])
    table = R.comparison_table(ours, ref)
    assert set(table.architecture) == {"convnet", "stnet"} and (table.decision == R.EQUIVALENT).all()
    assert table.p.tolist() == pytest.approx([1.0, 1.0]) and (table.ours_last == table.study_last).all()
    assert table.study_last[table.architecture == "stnet"].item() == "98.64 ± 0.09 (n=10)"
    # median epoch (ours) against elapsed / epochs (the study's): the same ratio up to the median's rounding
    assert table.ours_time_vs_convnet.tolist() == pytest.approx(table.study_time_vs_convnet.tolist(), rel=0.05)
    shifted = R.comparison_table(_ours_from_reference(ref, "mnist", "stnet", range(1, 4), 20, shift=-0.01), ref)
    row = shifted.iloc[0]
    assert row.decision == R.OUTSIDE and row.ours_minus_study == pytest.approx(-0.01 + (ref[(ref.dataset == "mnist") & (ref.architecture == "stnet")
                                                          & (ref.epoch == 20) & ref.run.isin([1, 2, 3])].accuracy.mean()
                                                      - ref[(ref.dataset == "mnist") & (ref.architecture == "stnet")
                                                            & (ref.epoch == 20)].accuracy.mean()))
    assert "below" in row.verdict and "n = 3 vs 10" in row.verdict


def test_a_partial_run_is_compared_at_the_epochs_it_has():
    ref = R.reference()
    ours = _ours_from_reference(ref, "fashion_mnist", "convnet", [1, 2], 4)
    ours = ours[~((ours.seed == 2) & (ours.epoch == 4))]  # one trial is an epoch behind
    row = R.comparison_table(ours, ref).iloc[0]
    assert row.epoch == 3 and row.study_epochs == 30 and row.ours_n == 2 and row.study_n == 5
    at3 = ref[(ref.dataset == "fashion_mnist") & (ref.architecture == "convnet") & (ref.epoch == 3)].accuracy
    assert row.study_last_mean == pytest.approx(at3.mean())


def test_epochs_to_target_is_the_median_with_unreached_runs_last():
    assert R._median_epochs([3, 4, 5], 20) == "4 (3/3 reached)"
    assert R._median_epochs([3, float("inf"), float("inf")], 20) == "> 20 (1/3 reached)"
    assert R._median_epochs([2, 3, float("inf")], 20) == "3 (2/3 reached)"
    assert R._median_epochs([float("inf")] * 2, 3) == "> 3 (0/2 reached)"


def test_the_section_appears_only_for_study_protocol_trials(tmp_path):
    from analysis.load import load
    from test_analysis import Synth

    synth = Synth(tmp_path / "store")
    ref = R.reference()
    for arch in ("convnet", "stnet"):
        for run in (1, 2):
            curve = ref[(ref.dataset == "mnist") & (ref.architecture == arch) & (ref.run == run)].accuracy.tolist()[:3]
            synth.trial(arch, run, curve, trial_id=f"plain-{arch}-{run}")
    assert R.section(load(synth.root)) is None
    synth.run("name: seed\narchitectures: [convnet, stnet]\ntraining: {protocol: study, seeds: 2, epochs: 3}\n"
              "datasets: {mnist: {}}\n", space="seed")
    seed_trials = parse_space("name: seed\narchitectures: [convnet, stnet]\ntraining: {protocol: study, seeds: 2, "
                              "epochs: 3}\ndatasets: {mnist: {}}\n").trials()
    for t in seed_trials:
        curve = ref[(ref.dataset == "mnist") & (ref.architecture == t.architecture)
                    & (ref.run == t.seed + 1)].accuracy.tolist()[:3]
        synth.trial(t.architecture, t.seed, curve, trial_id=t.trial_id, finished=False)  # running
    section = R.section(load(synth.root))
    assert section is not None and section.key == "study"
    table = section.tables["study_comparison"]
    assert len(table) == 2 and (table.epoch == 3).all() and (table.ours_n == 2).all()
    assert (table.decision == R.INCONCLUSIVE).all()  # 2 runs against 10: neither outside nor shown within
    assert section.figures and section.figures[0][2][:4] == b"\x89PNG"
    assert any("partial run" in n for n in section.notes)
    from analysis.report import build

    _, paths = build(synth.root, tmp_path / "report", checkpoints=False)
    summary = paths["markdown"].read_text()
    assert "8. Reproduction of the reference study" in summary and "inconclusive: not shown outside" in summary
    assert "within the published spread" not in summary
    assert (tmp_path / "report" / "figures" / "study_curves.png").is_file()
    assert (tmp_path / "report" / "tables" / "study_comparison.csv").is_file()
    assert "Reproduction" in paths["html"].read_text()


@pytest.mark.slow
def test_a_reduced_seed_run_through_ray_gets_a_reproduction_section(ray_local, mnist_root, tmp_path):
    """seed.yaml itself, cut down with --set to CI size: the study's protocol end to end, then the report."""
    from analysis.report import build
    from harness.cli import main

    results = tmp_path / "results"
    argv = ["--space", "seed", "--datasets", "mnist", "--architectures", "convnet,stnet", "--seeds", "0",
            "--set", "datasets.mnist.epochs=2", "--set", "training.train_limit=500", "--set", "training.test_limit=300",
            "--gpu", "0", "--results-dir", str(results), "--data-dir", str(mnist_root), "--wandb-mode", "disabled",
            "--quiet"]
    assert main(argv) == 0
    a, paths = build(results, tmp_path / "report", checkpoints=False)
    table = a.tables["study_comparison"]
    assert set(table.architecture) == {"convnet", "stnet"} and (table.epoch == 2).all() and (table.ours_n == 1).all()
    assert "Reproduction of the reference study" in paths["markdown"].read_text()
