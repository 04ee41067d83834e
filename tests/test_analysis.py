"""The analysis package on synthetic stores whose answers are known, plus one real checkpoint and the notebook."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import figures, metrics, stats
from analysis import format as fmt
from analysis.load import _benchmark_only, _expected_trials, load
from analysis.compute import analyse
from analysis.load import parse_targets, recorded_data_dir
from analysis.report import build, main, sections
from conftest import epoch_records, space_yaml
from harness.errors import UserError
from harness.space import parse_space
from harness.store import ResultsStore

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# -- a synthetic store -----------------------------------------------------------------------------
class Synth:
    """Writes trials into a real store through its public API, with every number chosen by the test."""

    def __init__(self, root: Path):
        self.store = ResultsStore.open(root)
        self.root = root

    def trial(self, arch, seed, val_acc, *, dataset="mnist", status="complete", test_acc=None, sec=1.0, eval_sec=0.1,
              train_acc=None, train_loss=None, val_loss=None, hardware=("cpu", "Test CPU", None), trial_id=None,
              finished=True, n_images=1000, space="synth", train_eval=None, planned=None):
        """``val_acc``: one value per epoch; ``sec``: training seconds per epoch (a number or a list);
        ``planned``: the epochs its training settings asked for (default: as many as it has)."""
        trial_id = trial_id or f"{dataset}-{arch}-{seed}"
        n = len(val_acc)
        sec = [sec] * n if np.isscalar(sec) else list(sec)
        train_acc = train_acc or [a - 0.01 for a in val_acc]
        train_loss = train_loss or [1.0 - a for a in train_acc]
        val_loss = val_loss or [1.0 - a for a in val_acc]
        rows = [{"trial_id": trial_id, "run_id": "r1", "architecture": arch, "dataset": dataset, "seed": seed,
                 "epoch": e + 1, "train_loss": train_loss[e], "train_acc": train_acc[e], "val_loss": val_loss[e],
                 "val_acc": val_acc[e], "train_time_s": sec[e], "eval_time_s": eval_sec, "images_per_s": n_images / sec[e],
                 "reported_at": T0 + timedelta(seconds=e),
                 **({"train_eval_acc": train_eval[e][0], "train_eval_loss": train_eval[e][1]} if train_eval else {})}
                for e in range(n)]
        self.store.put_epochs(trial_id, rows)
        if finished:
            device, cpu, gpu = hardware
            self.store.put_trial({
                "trial_id": trial_id, "run_id": "r1", "architecture": arch, "dataset": dataset, "seed": seed,
                "space": space, "status": status, "error": "RuntimeError: boom" if status == "error" else None,
                "epochs_completed": n, "best_epoch": int(np.argmax(val_acc)) + 1, "best_val_acc": max(val_acc),
                "test_acc": (max(val_acc) if test_acc is None else test_acc) if status == "complete" else None,
                "test_loss": 0.1 if status == "complete" else None, "num_params": 100, "train_time_s": sum(sec),
                "eval_time_s": eval_sec * n, "config_json": json.dumps({"training": {"epochs": planned or n}}), "hostname": "h",
                "device": device, "cpu_model": cpu, "gpu_model": gpu, "git_commit": "abc123", "git_dirty": False,
                "python_version": "3.11", "torch_version": "2.x", "finished_at": T0})
        return trial_id

    def run(self, yaml_text: str, space="synth", run_id="r1", **provenance):
        self.store.put_run({"run_id": run_id, "space": space, "space_yaml": yaml_text, "command": "run_benchmark.py",
                            "address": "local", "trials_total": 0, "trials_skipped": 0, "started_at": T0,
                            "finished_at": T0, "provenance_json": json.dumps({"git_commit": "abc123", "platform": "Linux",
                                                                              **provenance})})


@pytest.fixture()
def synth(tmp_path) -> Synth:
    return Synth(tmp_path / "store")


# -- tables on synthetic stores ------------------------------------------------------------------
def test_accuracy_counts_failed_trials_beside_the_mean(synth):
    for seed, acc in enumerate([0.90, 0.92, 0.94]):
        synth.trial("convnet", seed, [0.5, 0.8], test_acc=acc)
    synth.trial("convnet", 3, [0.5, float("nan")], status="diverged")
    synth.trial("convnet", 4, [0.5], status="error")
    table = metrics.accuracy_table(load(synth.root).trials).set_index("architecture")
    row = table.loc["convnet"]
    assert (row.seeds, row.diverged, row.error) == (3, 1, 1)
    assert row["mean"] == pytest.approx(0.92)
    assert row.mean_high - row["mean"] == pytest.approx(sps.t.ppf(0.975, 2) * 0.02 / math.sqrt(3))
    assert math.isnan(row.iqm_low) and "needs ≥ 10" in row.iqm_note and row["values"] == "0.9 0.92 0.94"


def test_two_seeds_with_the_same_accuracy_are_not_shown_as_certainty(synth):
    for seed in range(2):
        synth.trial("stnet", seed, [0.5, 0.8], test_acc=0.9749)
    table = metrics.accuracy_table(load(synth.root).trials)
    shown = fmt.accuracy(table).iloc[0].tolist()
    assert "97.49 (all 2 seeds equal)" in shown and "seeds: 97.49, 97.49" in shown
    assert not any("[97.49, 97.49]" in str(v) for v in shown)


def test_overhead_of_an_architecture_built_to_be_1_5x_slower(synth):
    base = [1.0, 1.2, 0.9, 1.1]
    for seed, (b, s) in enumerate(zip(base, [1.1, 0.9, 1.2, 1.0])):
        synth.trial("convnet", seed, [0.5, 0.6, 0.7], sec=b, eval_sec=0.2)
        synth.trial("stnet", seed, [0.5, 0.6, 0.7], sec=[1.5 * s, 1.5 * s, 1.5 * s], eval_sec=0.2)
        # on other hardware without a baseline: reported, but no ratio (never compared across machines)
        synth.trial("stnet", seed, [0.5], sec=0.1, hardware=("cuda", None, "Test GPU"), trial_id=f"gpu-{seed}")
    results = load(synth.root)
    table = metrics.overhead_table(metrics.trial_summary(results.epochs), results.trials)
    cpu = table[table.hardware == "CPU Test CPU"].set_index("architecture")
    assert cpu.loc["stnet", "time_ratio"] == pytest.approx(1.5)
    assert cpu.loc["stnet", "time_ratio_low"] < 1.5 < cpu.loc["stnet", "time_ratio_high"]
    assert cpu.loc["stnet", "throughput_ratio"] == pytest.approx(1 / 1.5)
    assert cpu.loc["stnet", "eval_ratio"] == pytest.approx(1.0)  # evaluation time shown separately
    assert cpu.loc["convnet", "time_ratio"] == pytest.approx(1.0)
    gpu = table[table.hardware == "GPU Test GPU"]
    assert len(gpu) == 1 and math.isnan(gpu.time_ratio.iloc[0])


def test_convergence_censors_trials_that_never_reach_the_target(synth):
    # reach 0.9 at epochs 1, 2, 3; two seeds never reach it in 4 epochs; 2 s of training per epoch
    curves = {0: [0.95, 0.96, 0.97, 0.97], 1: [0.8, 0.91, 0.93, 0.95], 2: [0.7, 0.8, 0.9, 0.92],
              3: [0.7, 0.8, 0.85, 0.88], 4: [0.6, 0.7, 0.8, 0.85]}
    for seed, curve in curves.items():
        synth.trial("convnet", seed, curve, sec=2.0)
    synth.trial("convnet", 5, [0.5, 0.6], finished=False)  # still running: censored at epoch 2
    results = load(synth.root)
    ttt = metrics.time_to_target(results.epochs, {"mnist": 0.9}, results.trials)
    assert ttt.set_index("seed").loc[2, "epoch"] == 3 and ttt.set_index("seed").loc[2, "train_seconds"] == 6.0
    assert ttt.set_index("seed").loc[5, "censored_at"] == "last epoch"
    assert ttt.reached.sum() == 3 and len(ttt) == 6
    table = metrics.convergence_table(ttt)
    epochs = table[table.clock == "epochs"].iloc[0]
    seconds = table[table.clock == "seconds"].iloc[0]
    naive = np.median([1, 2, 3])  # what dropping the censored trials would say
    assert (epochs.trials, epochs.reached) == (6, 3)
    assert epochs["median"] == 3 >= naive and seconds["median"] == 6.0
    assert epochs.low <= epochs["median"] <= epochs.high
    assert seconds.hardware == "CPU Test CPU"
    # a dataset without a target is left out of the convergence tables
    assert metrics.time_to_target(results.epochs, {"fashion_mnist": 0.85}, results.trials).empty


def test_failed_trials_count_as_never_reaching_the_target(synth):
    # 2 seeds reach 0.9 at epoch 10; 3 diverge at epoch 2 of 20 planned: no median (2 of 5 reached it)
    for seed in range(2):
        synth.trial("convnet", seed, [0.5] * 9 + [0.95] * 11, sec=1.0)
    for seed in range(2, 5):
        synth.trial("convnet", seed, [0.5, float("nan")], status="diverged", sec=1.0, planned=20)
    results = load(synth.root)
    ttt = metrics.time_to_target(results.epochs, {"mnist": 0.9}, results.trials).set_index("seed")
    assert ttt.loc[3, "epoch"] == 20 and ttt.loc[3, "censored_at"] == "planned horizon (failed)"
    assert ttt.loc[3, "train_seconds"] == pytest.approx(20.0)  # 2 s so far, then 1 s per planned epoch
    row = metrics.convergence_table(ttt.reset_index()).query("clock == 'epochs'").iloc[0]
    assert row["median"] == math.inf and row.failed == 3


def test_seconds_to_target_and_overhead_are_never_pooled_across_hardware(synth):
    for seed in range(2):
        synth.trial("convnet", seed, [0.5, 0.95], sec=4.0)
        synth.trial("convnet", seed + 10, [0.5, 0.95], sec=0.5, hardware=("cuda", None, "Test GPU"))
    a = analyse(load(synth.root), {"mnist": 0.9}, checkpoints=False)
    seconds = a.tables["convergence"].query("clock == 'seconds'").set_index("hardware")
    assert seconds.loc["CPU Test CPU", "median"] == 8.0 and seconds.loc["GPU Test GPU", "median"] == 1.0
    assert len(a.tables["convergence"].query("clock == 'epochs'")) == 1  # an epoch is an epoch anywhere
    assert any(n.startswith("mixed hardware: trials ran on 2 device models") for n in a.notes)


def test_gap_at_best_and_last_epoch(synth):
    for seed in range(3):
        synth.trial("convnet", seed, [0.80, 0.90, 0.85], train_acc=[0.80, 0.95, 0.99],
                    train_loss=[0.5, 0.2, 0.05], val_loss=[0.6, 0.3, 0.4])
    gaps = metrics.gap_table(metrics.trial_summary(load(synth.root).epochs)).set_index("at")
    assert gaps.loc["best", "acc_gap"] == pytest.approx(0.05) and gaps.loc["last", "acc_gap"] == pytest.approx(0.14)
    assert gaps.loc["best", "loss_gap"] == pytest.approx(0.1) and gaps.loc["last", "loss_gap"] == pytest.approx(0.35)
    assert set(gaps["train_metric"]) == {"running"}


def test_gap_uses_eval_mode_training_metrics_when_the_store_has_them(synth):
    for seed in range(3):
        synth.trial("convnet", seed, [0.80, 0.90, 0.85], train_acc=[0.70, 0.80, 0.80],
                    train_eval=[(0.82, 0.5), (0.97, 0.1), (0.99, 0.05)], val_loss=[0.6, 0.3, 0.4])
    gaps = metrics.gap_table(metrics.trial_summary(load(synth.root).epochs)).set_index("at")
    assert set(gaps["train_metric"]) == {"eval"}
    assert gaps.loc["best", "acc_gap"] == pytest.approx(0.07) and gaps.loc["last", "acc_gap"] == pytest.approx(0.14)
    assert gaps.loc["best", "loss_gap"] == pytest.approx(0.2) and gaps.loc["last", "loss_gap"] == pytest.approx(0.35)


def test_paired_comparisons_pair_by_seed_and_correct_with_holm(synth):
    base = [0.90, 0.92, 0.91, 0.93, 0.89]
    better = [0.02, 0.03, 0.01, 0.02, 0.02]
    noise = [0.004, -0.003, 0.002, -0.004, 0.001]
    for seed, b in enumerate(base):
        synth.trial("convnet", seed, [0.5], test_acc=b)
        synth.trial("stnet", seed, [0.5], test_acc=b + better[seed])
        synth.trial("coordconv", seed, [0.5], test_acc=b + noise[seed])
    synth.trial("stnet", 9, [0.5], test_acc=0.5)  # no convnet with seed 9: not a pair
    synth.trial("coordconv", 7, [0.5], status="diverged")
    table = metrics.paired_table(load(synth.root).trials).set_index("architecture")
    st, cc = table.loc["stnet"], table.loc["coordconv"]
    assert st.pairs == 5 and st.difference == pytest.approx(0.02) and st.low < 0.02 < st.high
    p_st = sps.ttest_rel(np.add(base, better), base).pvalue
    p_cc = sps.ttest_rel(np.add(base, noise), base).pvalue
    assert st.p == pytest.approx(p_st) and cc.p == pytest.approx(p_cc)
    np.testing.assert_allclose([st.p_holm, cc.p_holm], stats.holm([p_st, p_cc]))
    assert st.significant and not cc.significant
    # effect sizes: P(a seed of stnet beats a convnet seed), over all complete seeds of each, and the power line
    st_all, base_all = np.add(base, better).tolist() + [0.5], base
    beats = np.mean([[(x > y) + 0.5 * np.isclose(x, y) for y in base_all] for x in st_all])  # ties count half
    assert st.prob == pytest.approx(beats) and st.prob_low < st.prob <= st.prob_high
    assert st.family == 2 and st.power_alpha == 0.025  # the power line at the family's corrected α
    assert st.needed == stats.seeds_needed(np.std(better, ddof=1), metrics.EFFECT, 0.05 / 2)
    words = " ".join(metrics.describe_paired(table.reset_index()))
    assert "1 of 2 differences" in words and "paired seeds" in words and "with probability" in words
    assert "stnet vs convnet on mnist" in words and "coordconv vs convnet on mnist" in words
    assert "+2.00 pp" in words


def test_a_raw_interval_that_excludes_zero_is_not_clearly_different_after_holm(synth):
    """Two comparisons, each with a raw 95 % interval above 0 (p = 0.036 and 0.032), whose Holm-adjusted p-values
    are 0.064: the answer, the headline and the paired table all say 'not clearly different' / not significant."""
    from analysis import verdict

    base = [0.90, 0.92, 0.91, 0.93, 0.89]
    up = {"stnet": [0.012, 0.003, 0.006, 0.010, 0.001], "coordconv": [0.011, 0.002, 0.007, 0.009, 0.0015]}
    for seed, b in enumerate(base):
        synth.trial("convnet", seed, [0.5], test_acc=b)
        for arch, d in up.items():
            synth.trial(arch, seed, [0.5], test_acc=b + d[seed])
    tables = {"paired": metrics.paired_table(load(synth.root).trials)}
    raw = {a: sps.ttest_1samp(d, 0.0).pvalue for a, d in up.items()}
    assert all(p < 0.05 for p in raw.values())
    p_holm = min(1.0, max(2 * min(raw.values()), max(raw.values())))  # Holm by hand for two tests
    for r in tables["paired"].itertuples():
        assert r.low > 0 and r.p == pytest.approx(raw[r.architecture]) and r.p_holm == pytest.approx(p_holm) and p_holm >= 0.05
        assert not r.significant and verdict.comparison_word(r) == verdict.SAME
        line = verdict.accuracy_sentence(r, "convnet", "95 %")
        assert f"is not clearly different from convnet's" in line and "(unadjusted 95 % CI)" in line
        assert f"Holm-adjusted p = {p_holm:.2g} across 2 comparisons" in line
        assert "corrected α = 0.025" in line and "higher" not in line
        words = metrics.power_sentence(r)
        assert "α = 0.05 / 2 = 0.025 (Holm's family of 2)" in words and "rough guide" not in words  # 5 pairs
    # the same store read through the whole report: the answer's sentences and headline cells
    a = analyse(load(synth.root), checkpoints=False)
    answer = " ".join(a.verdicts["mnist"])
    assert answer.count("not clearly different from convnet's") == 2 and "higher than" not in answer
    cells = a.tables["headline"].set_index("architecture")["test accuracy"]
    assert cells["stnet"].startswith("not clearly different (Holm p = 0.064") and "higher" not in " ".join(cells)
    assert any("unadjusted" in c for c in a.tables["headline"].columns)
    # with a single comparison the same raw p (0.036) survives, and the words say so
    alone = metrics.paired_table(load(synth.root).trials.query("architecture != 'coordconv'")).iloc[0]
    assert alone.significant and verdict.comparison_word(alone) == verdict.HIGHER


def test_an_untested_comparison_is_worded_not_clearly_different_with_the_reason():
    from types import SimpleNamespace

    from analysis import verdict

    row = SimpleNamespace(architecture="stnet", difference=0.01, low=float("nan"), high=float("nan"), p=float("nan"),
                          p_holm=float("nan"), significant=False, pairs=3, needed=float("nan"), effect=0.005,
                          power_alpha=0.025, family=2, note="all 3 paired differences equal: no spread to test against")
    line = verdict.accuracy_sentence(row, "convnet", "95 %")
    assert "is not clearly different from convnet's: +1.00 (all 3 paired" in line and "no test (all 3" in line
    assert "unadjusted" not in line  # no interval shown, so none labelled


def test_the_power_line_is_a_rough_guide_below_five_pairs_and_uses_the_corrected_alpha():
    from types import SimpleNamespace

    row = SimpleNamespace(effect=0.005, needed=17.0, pairs=3, sd=0.005, family=9, power_alpha=0.05 / 9)
    words = metrics.power_sentence(row)
    assert "α = 0.05 / 9 = 0.0056 (Holm's family of 9)" in words and "a rough guide" in words and "17 paired" in words
    assert stats.seeds_needed(1.0, 1.0, 0.05 / 9) == 17 and stats.seeds_needed(1.0, 1.0) == 10  # d = 1, as G*Power


def test_tuning_trials_are_kept_apart_when_the_store_marks_a_stage():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "stage": ["benchmark", "tuning", None]})
    epochs = pd.DataFrame({"trial_id": ["a", "b", "c"], "epoch": [1, 1, 1]})
    notes = []
    kept_trials, kept_epochs = _benchmark_only(trials, epochs, notes)
    assert list(kept_trials.trial_id) == ["a", "c"] and list(kept_epochs.trial_id) == ["a", "c"]
    assert notes == ["set aside, not benchmark trials: 1 tuning trial(s)"]


def test_one_search_space_or_all_of_them(synth):
    space_b = space_yaml(SYNTH, name="other", training={"epochs": 2, "seeds": 1})
    synth.run(SPACE, space="synth", run_id="r1")
    synth.run(space_b, space="other", run_id="r2")
    ids_b = {t.architecture: t.trial_id for t in parse_space(space_b).trials()}
    synth.trial("convnet", 0, [0.9])
    synth.trial("stnet", 0, [0.9], trial_id=ids_b["stnet"], space="other")
    pooled = load(synth.root)
    assert "2 search spaces" in " ".join(pooled.notes)
    other = load(synth.root, space="other")
    assert set(other.trials.trial_id) == set(ids_b.values()) and list(other.spaces) == ["other"]
    assert other.trials.set_index("architecture").status.to_dict() == {"convnet": "pending", "stnet": "complete"}
    with pytest.raises(UserError, match="--space: no run of a space named 'nope'"):
        load(synth.root, space="nope")


def test_targets_from_the_datasets_the_space_and_the_command_line(synth):
    from harness.data import DATASETS

    assert parse_targets(["mnist=0.9", "fashion_mnist=85%"]) == {"mnist": 0.9, "fashion_mnist": 0.85}
    assert all(0 < getattr(d, "convergence_target", 0) <= 1 for d in DATASETS.values())  # every dataset has one
    assert metrics.DEFAULT_TARGETS["mnist"] == 0.98 and metrics.DEFAULT_TARGETS["fashion_mnist"] == 0.85
    synth.run(SPACE + "targets: {mnist: 0.95}\n")
    synth.trial("convnet", 0, [0.9, 0.96])
    assert analyse(load(synth.root), checkpoints=False).targets["mnist"] == 0.95  # the space's own
    assert analyse(load(synth.root), {"mnist": 0.9}, checkpoints=False).targets["mnist"] == 0.9  # --target wins
    assert "targets" in parse_space(SPACE + "targets: {mnist: 0.95}\n").model_dump()
    for bad in ("mnist", "mnist=2", "=0.5", "mnist=x"):
        with pytest.raises(UserError, match="--target"):
            parse_targets([bad])


# -- the report ------------------------------------------------------------------------------------
SYNTH = {"name": "synth", "architectures": ["convnet", "stnet"], "training": None}
SPACE = space_yaml(SYNTH, training={"epochs": 3, "seeds": 3})


def test_a_partially_finished_store_still_reports_what_is_there(synth, tmp_path):
    synth.run(SPACE)
    expected = {(t.architecture, t.seed): t.trial_id for t in parse_space(SPACE).trials()}
    synth.trial("convnet", 0, [0.95, 0.97, 0.985], trial_id=expected["convnet", 0])
    synth.trial("convnet", 1, [0.96, 0.98, 0.99], trial_id=expected["convnet", 1])
    synth.trial("stnet", 0, [0.9, float("nan")], status="diverged", trial_id=expected["stnet", 0])
    synth.trial("stnet", 1, [0.97], trial_id=expected["stnet", 1], finished=False)  # running
    # convnet/2 and stnet/2 have not started; a third dataset without a target is reported too
    synth.trial("convnet", 0, [0.5, 0.6], dataset="toyset")
    a, paths = build(synth.root, tmp_path / "out", checkpoints=False)
    status = a.tables["status"].set_index(["dataset", "architecture"])
    assert status.loc[("mnist", "convnet"), ["complete", "pending"]].tolist() == [2, 1]
    assert status.loc[("mnist", "stnet"), ["diverged", "running", "pending"]].tolist() == [1, 1, 1]
    notes = " ".join(a.notes)
    assert "1 trial(s) running" in notes and "2 not started" in notes and "1 diverged" in notes
    assert "no target accuracy for toyset" in notes
    assert set(a.tables["convergence"].dataset) == {"mnist"}
    html = paths["html"].read_text()
    assert "abc123" in html and "name: synth" in html and html.count("data:image/png;base64,") == 4
    assert "Nothing to show yet" not in html.split("1. Test accuracy")[1].split("2. Paired")[0]
    md = paths["markdown"].read_text()
    assert "| mnist | convnet | 2 |" in md and "no target accuracy for toyset" in md
    for name in ("accuracy", "convergence", "gaps", "overhead", "paired", "status"):
        assert (tmp_path / "out" / "tables" / f"{name}.csv").is_file()
    assert pd.read_csv(tmp_path / "out" / "tables" / "accuracy.csv").shape[0] == 3


def test_an_empty_store_reports_that_it_is_empty(tmp_path):
    ResultsStore.open(tmp_path / "store")
    a, paths = build(tmp_path / "store", tmp_path / "out", checkpoints=False)
    assert "no trials yet" in " ".join(a.notes) and paths["html"].is_file()


def test_command_line(synth, tmp_path, capsys):
    synth.trial("convnet", 0, [0.99])
    out = tmp_path / "out"
    assert main(["--results-dir", str(synth.root), "--out", str(out), "--no-checkpoints", "--target", "mnist=0.9"]) == 0
    assert (out / "report.html").is_file() and (out / "summary.md").is_file()
    assert main(["--results-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "error: --results-dir" in capsys.readouterr().err
    assert main(["--results-dir", str(synth.root), "--target", "mnist", "--out", str(out)]) == 2
    assert main(["--results-dir", str(synth.root), "--space", "nope", "--out", str(out)]) == 2


# -- the weights ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, mnist_root):
    """A store with one real, tiny stnet trial and its checkpoint in the callback's layout."""
    from harness.contract import Checkpoint
    from harness.train import Trainer, load_splits
    from harness.trial import Trial

    root = tmp_path_factory.mktemp("trained") / "store"
    synth = Synth(root)
    from harness.space import Training

    training = Training(epochs=1, lr=0.05, momentum=0.5, val_size=100, train_limit=256, test_limit=200)
    trial = Trial(architecture="stnet", dataset="mnist", seeds=(0,), training=training.model_dump(exclude={"seeds"}))
    trainer = Trainer(trial, load_splits(trial, mnist_root))
    metrics_ = epoch_records(trainer)[-1]
    synth.trial("stnet", 0, [metrics_["val_acc"]], test_acc=metrics_["test_acc"], trial_id="real-stnet")
    saved = Checkpoint(model_spec=trainer.model_spec, best=trainer.best_weights(), trainer=trainer.state_dict())
    synth.store.put_checkpoint("real-stnet", saved.for_seed(0, trial.record()).to_bytes())
    synth.trial("convnet", 0, [0.5])  # complete, but its checkpoint is missing
    return root, metrics_["test_acc"]


def test_checkpoint_figures_from_a_real_checkpoint(trained_store, mnist_root, tmp_path):
    from analysis.checkpoints import inspect_checkpoints

    root, test_acc = trained_store
    ins = inspect_checkpoints(load(root), mnist_root)
    (confusion,) = ins.confusions
    assert confusion.matrix.sum() == 200 and np.trace(confusion.matrix) / 200 == pytest.approx(test_acc)
    (transform,) = ins.transforms
    assert transform.inputs.shape == transform.outputs.shape == (12, 1, 28, 28)
    (wrong,) = ins.misclassified
    assert wrong.wrong == 200 - np.trace(confusion.matrix) and len(wrong.images) == min(16, wrong.wrong)
    assert any("no checkpoint" in n and "convnet/seed 0" in n for n in ins.notes)
    a, paths = build(root, tmp_path / "out", data_dir=mnist_root)
    names = {p.name for p in (tmp_path / "out" / "figures").iterdir()}
    assert {"confusion_mnist.png", "transform_mnist_stnet.png", "misclassified_mnist_stnet.png"} <= names


def test_the_report_finds_the_data_through_the_environment(trained_store, mnist_root, tmp_path, monkeypatch):
    from harness.data import DATA_DIR_ENV

    root, _ = trained_store
    monkeypatch.chdir(tmp_path)  # no ./datasets to fall back on
    monkeypatch.setenv(DATA_DIR_ENV, str(mnist_root))
    a = analyse(load(root))  # no data_dir: $STBENCH_DATA_DIR it is
    assert len(a.inspection.confusions) == 1 and not any("checkpoint figures skipped" in n for n in a.notes)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "no-data"))
    assert any("checkpoint figures skipped" in n for n in analyse(load(root)).notes)


def test_checkpoint_figures_are_skipped_with_a_note_without_data(trained_store, tmp_path):
    root, _ = trained_store
    a = analyse(load(root), data_dir=tmp_path / "no-data")
    assert any("checkpoint figures skipped" in n and "--data-dir" in n for n in a.notes)
    assert not next(s for s in sections(a) if s.key == "weights").figures


def test_the_report_uses_the_data_directory_the_run_recorded(trained_store, mnist_root, tmp_path, monkeypatch):
    root, _ = trained_store
    monkeypatch.delenv("STBENCH_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # ./datasets does not exist here
    Synth(root).run(SPACE, run_id="r-data", data_dir=str(mnist_root))  # provenance_json key, as older runs wrote it
    a, _ = build(root, tmp_path / "out")  # no --data-dir
    assert a.data_dir.endswith("(recorded by the run)")
    names = {p.name for p in (tmp_path / "out" / "figures").iterdir()}
    assert {"confusion_mnist.png", "transform_mnist_stnet.png", "misclassified_mnist_stnet.png"} <= names
    assert len(names) >= 6
    # the runs table's own data_dir column (newer stores) comes first; the latest run that recorded one wins
    runs = pd.DataFrame({"started_at": [T0, T0 + timedelta(1), T0 + timedelta(2)], "data_dir": [None, "/b", None],
                         "provenance_json": ['{"data_dir": "/a"}', "{}", "{}"]})
    assert recorded_data_dir(runs) == "/b"
    assert recorded_data_dir(runs.drop(columns="data_dir")) == "/a"
    assert recorded_data_dir(runs.iloc[[2]].drop(columns="data_dir")) is None


def test_the_dataset_cache_the_run_recorded_is_used_while_the_weights_are_examined(tmp_path, monkeypatch):
    from analysis.checkpoints import _dataset
    from analysis.load import recorded_cache_dir

    monkeypatch.delenv("STBENCH_CACHE_DIR", raising=False)
    runs = pd.DataFrame({"started_at": [T0], "provenance_json": [json.dumps({"cache_dir": str(tmp_path)})]})
    assert recorded_cache_dir(runs) == tmp_path
    assert _dataset("mnist_r", tmp_path).cache == tmp_path and "STBENCH_CACHE_DIR" not in os.environ  # no env edit
    monkeypatch.setenv("STBENCH_CACHE_DIR", "/mine")  # the user's own setting wins
    assert recorded_cache_dir(runs) is None


def test_pending_trials_come_from_the_planned_ids_the_run_recorded():
    expected = parse_space(SPACE).trials()
    # each planned seed with its cell, as runs record it; the YAML (which may no longer parse) is not needed
    planned = [{"trial_id": t.trial_id, "architecture": t.architecture, "dataset": t.dataset, "seed": t.seed}
               for t in expected[:2]] + [{"trial_id": "x1", "architecture": "stnet", "dataset": "mnist", "seed": 7}]
    runs = pd.DataFrame({"space": ["synth"], "started_at": [T0], "planned_json": [json.dumps(planned)]})
    table = _expected_trials({"synth": "name: synth\nnot_a_key: 1\n"}, notes := [], runs)
    assert table.trial_id.tolist() == [p["trial_id"] for p in planned] and table.by_id.all() and not notes
    assert table.set_index("trial_id").loc["x1", ["architecture", "seed"]].tolist() == ["stnet", 7]
    # bare ids: placed through the YAML where it still expands to them, else counted as unknown cells
    bare = [t.trial_id for t in expected[:2]] + ["from-a-newer-schema"]
    runs = runs.assign(planned_json=[json.dumps(bare)])
    table = _expected_trials({"synth": SPACE}, [], runs)
    known = table[table["unknown_cell"] != True]  # noqa: E712
    assert list(known.trial_id) == bare[:2] and known.by_id.all()
    assert table[table["unknown_cell"] == True].trial_id.tolist() == ["from-a-newer-schema"]  # noqa: E712
    # stores without planned_json: the YAML expanded with today's schema
    assert len(_expected_trials({"synth": SPACE}, [], None)) == len(expected)


def test_the_report_opens_with_the_answer_and_every_label_follows_confidence(synth, tmp_path):
    for seed in range(3):
        synth.trial("convnet", seed, [0.9, 0.95, 0.97 + seed / 1000])
        synth.trial("stnet", seed, [0.92, 0.96, 0.98 + seed / 1000], sec=2.0)
    a, paths = build(synth.root, tmp_path / "out", confidence=0.9, checkpoints=False)
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "## The answer" and headings[-1] == "## Provenance"
    assert "95 %" not in md and "95 %" not in page and "90 %" in md
    answer = md.split("## The answer")[1].split("## What is missing")[0]
    assert "stnet" in answer and "3 paired seed(s)" in answer and "Median epochs to 98 %" in answer
    assert "<details><summary><h2" in page  # provenance folded


def test_figures_draw_seeds_at_small_n_and_keep_bands_in_range():
    from matplotlib.collections import PolyCollection

    rows = []
    for n_seeds, arch in ((2, "convnet"), (6, "stnet")):
        for seed in range(n_seeds):
            for epoch in (1, 2, 3):
                acc = 0.999 - 0.05 * (seed % 2) / epoch  # near the ceiling: a t-band would cross 1
                rows.append({"dataset": "mnist", "architecture": arch, "seed": seed, "trial_id": f"{arch}{seed}",
                             "epoch": epoch, "val_acc": acc, "val_loss": 0.02 * (seed % 2) / epoch,
                             "train_loss": 0.05})
    fig = figures.learning_curves(pd.DataFrame(rows))
    acc_ax, loss_ax = fig.axes[0], fig.axes[1]
    assert len(acc_ax.lines) == 2 + 1 + 1  # convnet: 2 thin seed lines and the mean; stnet: the mean over a band
    for ax, (low, high) in ((acc_ax, (0, 1)), (loss_ax, (0, math.inf))):
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands
        for band in bands:
            y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
            assert y.min() >= low - 1e-12 and y.max() <= high + 1e-12


# -- the notebook --------------------------------------------------------------------------------
def test_notebook_executes_on_a_synthetic_store(synth, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    for seed in range(2):
        synth.trial("convnet", seed, [0.9, 0.97, 0.985])
        synth.trial("stnet", seed, [0.92, 0.98, 0.99], sec=1.5)
    path = REPO / "analysis" / "result_analysis.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook with outputs cleared"
    monkeypatch.setenv("STBENCH_RESULTS_DIR", str(synth.root))
    monkeypatch.setenv("STBENCH_DATA_DIR", str(tmp_path / "no-data"))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "4 trials" in text and "stnet vs convnet" in text


# -- end to end ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_after_a_real_benchmark(ray_local, mnist_root, tmp_path, monkeypatch):
    from harness.cli import main as benchmark

    results, out = tmp_path / "results", tmp_path / "report"
    assert benchmark(["--space", "tiny", "--results-dir", str(results), "--data-dir", str(mnist_root), "--quiet"]) == 0
    assert main(["--results-dir", str(results), "--out", str(out), "--data-dir", str(mnist_root)]) == 0
    html = (out / "report.html").read_text()
    assert "tiny" in html and "transform_mnist_stnet" in html
    accuracy = pd.read_csv(out / "tables" / "accuracy.csv")
    assert set(accuracy.architecture) == {"convnet", "stnet"} and accuracy.seeds.tolist() == [1, 1]
    # without --data-dir: the directory the run recorded, so the weights' figures are there by default
    monkeypatch.delenv("STBENCH_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["--results-dir", str(results), "--out", str(tmp_path / "default")]) == 0
    assert "transform_mnist_stnet" in (tmp_path / "default" / "report.html").read_text()


def test_hardware_label_is_the_one_the_plan_and_the_report_group_by():
    from harness.provenance import hardware_label

    assert hardware_label("cuda:0", "AMD EPYC", "NVIDIA H100") == "GPU NVIDIA H100"
    assert hardware_label("cuda:0", "AMD EPYC", float("nan")) == "GPU cuda:0"  # a table's missing value
    assert hardware_label("cpu", "AMD EPYC", None) == "CPU AMD EPYC"
    assert hardware_label("cpu", None, None) == "CPU unknown"
    assert hardware_label(None, "AMD EPYC", None) is None  # rows from before the device was recorded


def test_a_study_protocol_trials_figures_use_the_studys_test_half(tmp_path, mnist_root):
    """``protocol: study`` evaluates on the study's half of the official test set (5,000 of MNIST's 10,000): the
    confusion matrix of such a trial's checkpoint counts exactly that half, not the standard test split."""
    from analysis.checkpoints import inspect_checkpoints
    from harness.contract import Checkpoint
    from harness.data import DATASETS
    from harness.models import build_model
    from harness.train import load_splits
    from harness.trial import Trial

    synth = Synth(tmp_path / "store")
    synth.trial("convnet", 0, [0.5], trial_id="study-convnet")
    trial = Trial("convnet", "mnist", (0,), training={"protocol": "study", "val_size": 100})
    splits = load_splits(trial, mnist_root)
    standard = DATASETS["mnist"].split_sizes(mnist_root)[1]
    assert len(splits.test_y) == standard // 2  # 5,000 with the real MNIST
    model = build_model("convnet", splits.in_shape, splits.num_classes)
    spec = {"architecture": "convnet", "in_shape": list(splits.in_shape), "num_classes": 10,
            "classes": list(splits.classes), "model_options": {}}
    saved = Checkpoint(model_spec=spec, best={0: {"state_dict": model.state_dict(), "best_epoch": 1}})
    synth.store.put_checkpoint("study-convnet", saved.for_seed(0, trial.record()).to_bytes())
    (confusion,) = inspect_checkpoints(load(synth.root), mnist_root).confusions
    assert confusion.matrix.sum() == len(splits.test_y) != standard


def test_a_wrapper_is_compared_with_what_it_wraps_paired_by_seed():
    """st(X) against X (and convnet), seed by seed; the p-value is scipy's paired t-test's; a space's
    ``baselines:`` replaces the default pairs."""
    from scipy import stats as sps

    acc = {"convnet": [0.90, 0.91, 0.92, 0.90], "tiny": [0.80, 0.82, 0.79, 0.81], "st(tiny)": [0.83, 0.84, 0.80, 0.86]}
    trials = pd.DataFrame([{"dataset": "blobs", "architecture": a, "seed": s, "status": "complete", "test_acc": v}
                           for a, vs in acc.items() for s, v in enumerate(vs)])
    table = metrics.paired_table(trials)
    pairs = set(zip(table.architecture, table.baseline))
    assert pairs == {("tiny", "convnet"), ("st(tiny)", "convnet"), ("st(tiny)", "tiny")}
    row = table[(table.architecture == "st(tiny)") & (table.baseline == "tiny")].iloc[0]
    assert row.p == pytest.approx(sps.ttest_rel(acc["st(tiny)"], acc["tiny"]).pvalue, rel=1e-9)
    assert row.family == 3  # Holm's family counts the wrapper comparisons too
    named = metrics.paired_table(trials, named={"st(tiny)": "tiny"})
    assert set(zip(named.architecture, named.baseline)) == {("tiny", "convnet"), ("st(tiny)", "tiny")}


def test_cells_whose_trials_ran_different_plugin_code_are_flagged():
    from analysis.compute import mixed_code_notes

    trials = pd.DataFrame({"dataset": "blobs", "architecture": ["tiny", "tiny", "st(tiny)", "st(tiny)"],
                           "status": "complete", "code_json": ['{"a": 1}', '{"a": 2}', '{"a": 1}', '{"a": 1}']})
    (note,) = mixed_code_notes(trials)
    assert note.startswith("tiny on blobs: its 2 complete trials ran 2 different versions") and "--retry-stale" in note
