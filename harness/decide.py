"""Seeds until decided: run seeds in rounds and stop each comparison once an anytime-valid test decides it.

Why not "look and add more": checking a plain paired t-test after every added seed (2 to 20) calls 26 % of
true nulls "significant". The test here keeps its error rate however often it is looked at and whenever the
looking stops.

Method: a confidence sequence for the mean paired difference μ (architecture − baseline, seed by seed), built
by inverting the sequential Bayes-factor t-test of Lai (1976, "On confidence sequences", Ann. Statist. 4:265)
as made precise for anytime-valid testing by Pérez-Ortiz, Lardy, de Heide & Grünwald (2024, "E-statistics,
group invariance and anytime-valid testing", Ann. Statist. 52:1410). For a hypothesised μ₀, with n pairs,
ν = n − 1 and t the one-sample t statistic of the differences minus μ₀, the Bayes factor with a N(0, g) prior
on the standardised effect (μ − μ₀)/σ and the right-Haar prior 1/σ on the scale is (Rouder et al. 2009, eq. 1
at fixed g)

    E_n(μ₀) = (1 + n g)^(−1/2) · [(1 + t²/(ν (1 + n g))) / (1 + t²/ν)]^(−(ν + 1)/2).

It is the likelihood ratio of the scale-invariant statistics, so under μ = μ₀ (normal seeds, any σ) it is a
non-negative martingale, and Ville's inequality gives P(E_n(μ₀) ≥ 1/α for some n) ≤ α: the set of μ₀ with
E_n(μ₀) < 1/α covers μ at every n simultaneously, so at whatever round the driver stops. E_n grows with t², so
that set is a t-interval with a wider, n-dependent critical value (``critical_t``): mean ± c_n · s/√n.

Decisions, each comparison at level α/K (Bonferroni over the K comparisons of the space, so the family-wise
error over all comparisons and all rounds is ≤ α):

* different: the interval excludes 0;
* equivalent: the interval lies inside ±margin;
* out of budget: neither by the last round (``budget`` seeds per cell).

Only normal seeds make the guarantee exact; tests/test_decide.py checks it by simulation for Student t (3 df),
skewed and outlier-contaminated seeds too (strongly skewed ones, exponential, exceed α: printed there). The
statistics are plain numpy; the driver's loop, the plan's numbers and the report's sentences below import the
harness lazily and nothing of Ray, and they call the same functions the simulation does.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError

ALPHA = 0.05
MARGIN = 0.005  # ±0.5 percentage points of accuracy: "no difference that matters"
PRIOR = 0.5  # g: the prior variance of the standardised effect in the mixture. 1.0 reaches decisions ~1 seed
#              sooner but lets skewed seeds through more often (tests/test_decide.py); 0.5 keeps them within α
DIFFERENT, EQUIVALENT, OUT_OF_BUDGET, UNDECIDED = "different", "equivalent", "out of budget", "undecided"
REASONS = {
    DIFFERENT: "its anytime-valid interval excludes 0",
    EQUIVALENT: "its anytime-valid interval lies inside ±{margin}",
    OUT_OF_BUDGET: "its interval neither excludes 0 nor fits inside ±{margin} within the budget of {budget} seeds",
    UNDECIDED: "its interval neither excludes 0 nor fits inside ±{margin} yet",
}


# -- the confidence sequence -----------------------------------------------------------------------------
def critical_t(n, alpha: float = ALPHA, prior: float = PRIOR) -> np.ndarray:
    """The |t| at which E_n reaches 1/α, for n pairs (vectorised; ``inf`` where no t reaches it at this n,
    since E_n is bounded by (1 + n g)^(ν/2)). Closed form: with A = 1 + n g and R = (√A / α)^(2 / (ν + 1)),
    t² / ν = (R − 1) / (1 − R / A)."""
    n = np.asarray(n, dtype=float)
    nu = n - 1
    a = 1 + n * prior
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.exp((2 / (nu + 1)) * (0.5 * np.log(a) - math.log(alpha)))
        x = (r - 1) / (1 - r / a)
        out = np.sqrt(nu * x)
    return np.where((n >= 2) & (r < a), out, np.inf)


def e_value(d: np.ndarray, mu0: float = 0.0, prior: float = PRIOR) -> np.ndarray:
    """E_n(μ₀) along the last axis (n = d.shape[-1] ≥ 2): the Bayes factor above (for tests and the report)."""
    n = d.shape[-1]
    nu = n - 1
    s = d.std(-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t2 = ((d.mean(-1) - mu0) / (s / math.sqrt(n))) ** 2
        a = 1 + n * prior
        return a ** -0.5 * ((1 + t2 / (nu * a)) / (1 + t2 / nu)) ** (-(nu + 1) / 2)


def interval(d: np.ndarray, alpha: float = ALPHA, prior: float = PRIOR):
    """Mean and the anytime-valid bounds along the last axis; (−∞, ∞) with fewer than 2 values, when every
    difference is the same (no spread to scale by: no certainty from it) or while no t could reach 1/α."""
    n = d.shape[-1]
    mean = d.mean(-1) if n else np.full(d.shape[:-1], np.nan)
    if n < 2:
        inf = np.full(np.shape(mean), np.inf)
        return mean, -inf, inf
    s = d.std(-1, ddof=1)
    half = critical_t(n, alpha, prior) * s / math.sqrt(n)
    half = np.where(s > 0, half, np.inf)
    return mean, mean - half, mean + half


def classify(low, high, margin: float = MARGIN) -> np.ndarray:
    """different / equivalent / undecided from the bounds (different wins when both hold)."""
    low, high = np.asarray(low), np.asarray(high)
    return np.where((low > 0) | (high < 0), DIFFERENT,
                    np.where((low > -margin) & (high < margin), EQUIVALENT, UNDECIDED))


def checkpoints(budget: int, round_size: int, first: int | None = None) -> list[int]:
    """The seed counts at which comparisons are looked at: ``first`` (default: one round, at least 2), then
    every ``round_size`` seeds, the last one the budget."""
    start = max(2, first or round_size)
    out = list(range(start, budget, round_size)) if start < budget else []
    return out + [budget]


@dataclass
class Stop:
    """Where each of many sequences of paired differences stopped (arrays over the leading axes)."""

    decision: np.ndarray
    n: np.ndarray  # pairs at the stop
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def stop(d: np.ndarray, looks: list[int], alpha: float = ALPHA, margin: float = MARGIN,
         prior: float = PRIOR) -> Stop:
    """The stopping rule: look after each count in ``looks`` (the first ``k`` values along the last axis) and
    stop at the first decision; undecided at the last look is out of budget. NaN values (a failed seed) are
    left out of the pairs they fall in. This is what the driver applies to the store and what the tests
    simulate, vectorised over the leading axes."""
    shape = d.shape[:-1]
    decision = np.full(shape, UNDECIDED, dtype=object)
    n_at = np.zeros(shape, dtype=int)
    mean, low, high = (np.full(shape, np.nan) for _ in range(3))
    has_nan = bool(np.isnan(d).any())
    for k in looks:
        part = d[..., :k]
        if has_nan:  # only the rows with a gap need the slow path
            m, lo, hi, count = _interval_with_gaps(part, alpha, prior)
        else:
            (m, lo, hi), count = interval(part, alpha, prior), np.full(shape, k)
        new = (decision == UNDECIDED)
        verdict = classify(lo, hi, margin)
        last = k == looks[-1]
        take = new & ((verdict != UNDECIDED) | last)
        decision = np.where(take, np.where(verdict == UNDECIDED, OUT_OF_BUDGET, verdict), decision)
        for arr, value in ((n_at, count), (mean, m), (low, lo), (high, hi)):
            arr[take] = np.broadcast_to(value, shape)[take]
    return Stop(decision, n_at, mean, low, high)


def _interval_with_gaps(part: np.ndarray, alpha: float, prior: float):
    flat = part.reshape(-1, part.shape[-1])
    out = np.empty((4, flat.shape[0]))
    for i, row in enumerate(flat):
        x = row[np.isfinite(row)]
        m, lo, hi = interval(x[None, :], alpha, prior)
        out[:, i] = (m[0] if len(x) else np.nan), lo[0], hi[0], len(x)
    return tuple(a.reshape(part.shape[:-1]) for a in out[:3]) + (out[3].reshape(part.shape[:-1]).astype(int),)


# -- the comparisons of a space ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    dataset: str
    architecture: str
    baseline: str

    @property
    def label(self) -> str:
        return f"{self.architecture} − {self.baseline} on {self.dataset}"


def comparisons(architectures, datasets, baselines) -> list[Comparison]:
    """Every non-baseline architecture against every baseline, per dataset: the family that shares α."""
    return [Comparison(d, a, b) for d in datasets for b in baselines for a in architectures if a not in baselines]


@dataclass
class Decision:
    comparison: Comparison
    decision: str
    n: int  # pairs it rests on
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan
    look: int = 0  # the seed count (round boundary) at which it was decided

    def sentence(self, alpha_each: float, margin: float, budget: int, family: int, scale: float = 100.0,
                 unit: str = "pp") -> str:
        """``stnet − convnet on mnist: different after 8 seeds (the anytime-valid interval excludes 0): +0.42
        [+0.11, +0.73] pp, family-wise error ≤ 5 % over 3 comparisons (each at α = 0.017)``"""
        m = f"{margin * scale:g} {unit}"
        why = REASONS[self.decision].format(margin=m, budget=budget)
        bounds = (f"{_num(self.mean, scale)} [{_num(self.low, scale)}, {_num(self.high, scale)}] {unit}"
                  if math.isfinite(self.mean) else "no pairs yet")
        return (f"{self.comparison.label}: {self.decision} after {self.n} paired seeds, because {why}; "
                f"difference {bounds} (anytime-valid {(1 - alpha_each) * 100:.3g} % interval); family-wise error "
                f"≤ {alpha_each * family * 100:g} % over {family} comparison{'s' * (family != 1)} at whatever round "
                "the run stops (exact for normal seeds; simulated for heavy-tailed, skewed and outlier seeds in "
                "tests/test_decide.py)")


def _num(x: float, scale: float) -> str:
    if not math.isfinite(x):
        return "∞" if x > 0 else "−∞"
    return f"{x * scale:+.2f}".replace("-", "−")


def paired_values(trials, comparison: Comparison, metric: str, below: int | None = None) -> np.ndarray:
    """The comparison's paired differences, in seed order, from a store's trials frame (complete trials; a seed
    with a failed side is left out); only seeds below ``below`` when given."""
    seeds, d = _paired(trials, comparison, metric)
    return d if below is None else d[seeds < below]


def _paired(trials, comparison: Comparison, metric: str) -> tuple[np.ndarray, np.ndarray]:
    done = trials[(trials["status"] == "complete") & (trials["dataset"] == comparison.dataset)
                  & trials["architecture"].isin([comparison.architecture, comparison.baseline])]
    if "stage" in done:
        done = done[done["stage"].fillna("benchmark") != "tune"]
    wide = done.pivot_table(index="seed", columns="architecture", values=metric, aggfunc="mean")
    if comparison.architecture not in wide or comparison.baseline not in wide:
        return np.array([], dtype=int), np.array([])
    pair = wide[[comparison.architecture, comparison.baseline]].dropna().sort_index()
    return (pair.index.to_numpy(dtype=int),
            (pair[comparison.architecture] - pair[comparison.baseline]).to_numpy(dtype=float))


@dataclass
class Settings:
    """What the stopping rule needs (the ``decide:`` section of a space, resolved)."""

    baselines: list[str]
    metric: str = "test_acc"
    margin: float = MARGIN
    alpha: float = ALPHA
    budget: int = 20
    round_size: int = 2
    first: int | None = None
    prior: float = PRIOR
    family: list[Comparison] = field(default_factory=list)

    @property
    def alpha_each(self) -> float:
        return self.alpha / max(len(self.family), 1)

    @property
    def looks(self) -> list[int]:
        return checkpoints(self.budget, self.round_size, self.first)


def replay(trials, settings: Settings, ids=None) -> dict[Comparison, Decision]:
    """Each comparison's decision from what the store holds, looking at the same round boundaries the driver
    looked at (so a rerun after a kill reaches the same decisions from the same seeds): the first look at
    which it was decided, else its state at the first look whose seeds the store does not have yet. ``ids``:
    the trial ids of the space's grid (other spaces' trials in the same store are not this experiment)."""
    if ids is not None:
        trials = trials[trials["trial_id"].isin(ids)]
    out = {}
    ended = trials[trials["status"].isin(ENDED)]
    ended_seeds = {key: np.asarray(sorted(g["seed"].unique())) for key, g in ended.groupby(["architecture", "dataset"])}
    for comparison in settings.family:
        state = Decision(comparison, UNDECIDED, 0)
        seeds, values = _paired(trials, comparison, settings.metric)
        for k in settings.looks:
            d = values[seeds < k]
            m, lo, hi = interval(d[None, :], settings.alpha_each, settings.prior)
            verdict = str(classify(lo, hi, settings.margin)[0])
            state = Decision(comparison, verdict, len(d), float(m[0]), float(lo[0]), float(hi[0]), k)
            if verdict != UNDECIDED:
                break
            if not _complete_below(ended_seeds, comparison, k):
                break  # this look's seeds are not all in the store yet: it is where the next round goes
        else:
            if state.decision == UNDECIDED:
                state.decision = OUT_OF_BUDGET
        out[comparison] = state
    return out


ENDED = ("complete", "diverged", "error")  # a store row that will not change (running / pending ones may)


def _complete_below(ended_seeds: dict, comparison: Comparison, k: int) -> bool:
    """Whether both sides have an ended row (any status) for every seed below ``k``."""
    for arch in (comparison.architecture, comparison.baseline):
        seeds = ended_seeds.get((arch, comparison.dataset), np.array([], dtype=int))
        if int((seeds < k).sum()) < k:
            return False
    return True


def next_round(decisions: dict[Comparison, Decision]) -> tuple[int, set[tuple[str, str]]] | None:
    """The look to fill next and the (architecture, dataset) cells that need its seeds: both sides of every
    undecided comparison (a cell whose every comparison is decided gets no more seeds); None when all are
    decided."""
    open_ = [d for d in decisions.values() if d.decision == UNDECIDED]
    if not open_:
        return None
    look = min(d.look for d in open_)
    cells = set()
    for d in open_:
        if d.look == look:
            cells |= {(d.comparison.architecture, d.comparison.dataset), (d.comparison.baseline, d.comparison.dataset)}
    return look, cells


# -- what a plan can say before anything runs -------------------------------------------------------------
def expected_seeds(settings: Settings, sd: float, difference: float, reps: int = 4000, seed: int = 0) -> dict:
    """Simulated (normal seeds): how often each decision is reached and the mean seeds per comparison, for a
    true mean difference ``difference`` and paired SD ``sd`` (fractions)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(difference, sd, (reps, settings.budget))
    s = stop(d, settings.looks, settings.alpha_each, settings.margin, settings.prior)
    return {"seeds": float(s.n.mean()), **{k: float(np.mean(s.decision == k)) for k in (DIFFERENT, EQUIVALENT, OUT_OF_BUDGET)}}


def plan_lines(settings: Settings, cells: int, sd: float | None = None, sd_source: str = "") -> list[str]:
    """The plan's view of a ``decide:`` run: the budget, and the seeds a decision is expected to take at the
    observed (or an assumed) spread of the paired differences, for no difference, one margin and two."""
    sd_used = sd if sd is not None and math.isfinite(sd) and sd > 0 else settings.margin
    source = sd_source or ("observed" if sd_used == sd else "assumed: one margin, none observed yet")
    lines = [f"seeds until decided: {len(settings.family)} comparison(s), each at α = {settings.alpha_each:.3g} "
             f"(family-wise {settings.alpha:g}), margin ±{settings.margin * 100:g} pp, looks at "
             f"{', '.join(map(str, settings.looks))} seeds; budget {settings.budget} seeds per cell, at most "
             f"{settings.budget * cells} trials",
             f"expected seeds per comparison (simulated, normal seeds, paired SD {sd_used * 100:.2g} pp, {source}):"]
    for k in (0.0, 1.0, 2.0):
        e = expected_seeds(settings, sd_used, k * settings.margin)
        lines.append(f"  true difference {k * settings.margin * 100:g} pp: {e['seeds']:.1f} seeds "
                     f"(different {e[DIFFERENT]:.0%}, equivalent {e[EQUIVALENT]:.0%}, out of budget "
                     f"{e[OUT_OF_BUDGET]:.0%})")
    return lines


# -- a space's decide: section, the driver's rounds and the report's sentences ---------------------------
# These take the harness's objects (a SearchSpace, the driver's session, a results frame) but import nothing
# of Ray: the session starts Ray itself when a round has work.
def config(space):
    """The space's ``decide:`` section, or its defaults (what ``--until-decided`` runs without one)."""
    from .space import Decide  # lazy, as every schema import here: the statistics above need no pydantic

    return space.decide or Decide()


def settings_for(space, stack: int = 1, selected: list[str] | None = None) -> Settings:
    """``Settings`` from the space's ``decide:`` section (its defaults when the space has none, as
    ``--until-decided`` runs it); ``stack``: the seeds trained together, which a round is at least; ``selected``:
    the architectures chosen on the command line."""
    cfg = config(space)
    archs = [a for a in space.architectures if selected is None or a in selected]
    round_size = cfg.round or max(2, stack)
    return Settings(list(cfg.baselines), cfg.metric, cfg.margin, cfg.alpha, cfg.budget, round_size, cfg.first,
                    family=comparisons(archs, list(space.datasets), cfg.baselines))


def budget_space(space, budget: int):
    """The space with every dataset's seeds set to 0 .. budget − 1: the grid the rounds draw their seeds from
    (trial ids are those of the same seeds in any other run of the space)."""
    datasets = {d: o.model_copy(update={"seeds": None}) for d, o in space.datasets.items()}
    return space.model_copy(update={"training": space.training.model_copy(update={"seeds": budget}),
                                    "datasets": datasets})


def check_selection(space, select_by: dict) -> None:
    """What ``--until-decided`` refuses before anything runs: explicit seeds (the rounds choose them), and a
    selection that leaves out a baseline or every other architecture."""
    cfg = config(space)
    if select_by.get("seeds") is not None:
        raise UserError("--seeds: not with seeds until decided (decide: / --until-decided choose the seeds round "
                        f"by round, up to decide.budget = {cfg.budget}); drop --seeds")
    chosen = select_by.get("architectures") or list(space.architectures)
    missing = [b for b in cfg.baselines if b not in chosen or b not in space.architectures]
    if missing:
        raise UserError(f"decide.baselines: {', '.join(missing)} must run too (it is what the others are compared "
                        f"with); allowed: {', '.join(space.architectures)}")
    if not [a for a in chosen if a not in cfg.baselines]:
        raise UserError("--architectures: only baselines chosen; nothing to compare")


def sentences(decisions: dict[Comparison, Decision], settings: Settings) -> list[str]:
    return [d.sentence(settings.alpha_each, settings.margin, settings.budget, len(settings.family))
            for d in decisions.values()]


def report_lines(results) -> list[str]:
    """For the report: per comparison of every run of seeds until decided in the store, its decision and why it
    stopped (``results``: analysis.load's, with ``trials`` and ``runs``). A run is one when its space (the YAML
    with the run's ``--set`` overrides) has a ``decide:`` section or its command said ``--until-decided``; the
    latest such run of each space is read, with the architectures and GPU share its command chose."""
    runs = getattr(results, "runs", None)
    if runs is None or runs.empty:
        return []
    lines = []
    latest = runs.sort_values("started_at").groupby("space", sort=True).tail(1)
    for row in latest.itertuples():
        found = _decided_run(row)
        if found is None:
            continue
        space, selected = found
        device = "cuda" if space.resources.gpu > 0 else "cpu"  # as the driver chose the stack (stack_device)
        settings = settings_for(space, max(space.stack_sizes(device).values()), selected)
        ids = {t.trial_id for t in budget_space(space, settings.budget).trials()}
        lines += [f"{row.space}: {s}" for s in sentences(replay(results.trials, settings, ids), settings)]
    return lines


# The run flags that change what a decision compared, read back from a run's recorded command line (the rest of
# ``stbench run``'s parser is the CLI's, which this module does not import: the CLI sits above everything).
_RUN_FLAGS = argparse.ArgumentParser(add_help=False)
_RUN_FLAGS.add_argument("--until-decided", action="store_true")
_RUN_FLAGS.add_argument("--architectures", type=lambda text: [v for v in text.split(",") if v.strip()], default=None)
_RUN_FLAGS.add_argument("--cpu", type=float, default=None)
_RUN_FLAGS.add_argument("--gpu", type=float, default=None)


def _decided_run(row):
    """(space with the run's overrides and --gpu / --cpu, chosen architectures), or None if the run did not
    decide seeds."""
    from .space import Resources, parse_space  # lazy: see config()

    try:
        overrides = json.loads(row.overrides_json) if isinstance(row.overrides_json, str) else []
        space = parse_space(row.space_yaml, source=str(row.space), overrides=overrides)
    except (UserError, ValueError, TypeError):
        return None
    words = shlex.split(row.command) if isinstance(row.command, str) else []
    words = words[1:]
    if words[:1] == ["run"]:
        words = words[1:]
    args, _ = _RUN_FLAGS.parse_known_args(words)
    if space.decide is None and not args.until_decided:
        return None
    resources = {k: v for k, v in (("cpu", args.cpu), ("gpu", args.gpu)) if v is not None}
    if resources:
        space = space.model_copy(update={"resources": Resources(**{**space.resources.model_dump(), **resources})})
    return space, args.architectures


def plan_for(space, store_trials=None, selected: list[str] | None = None) -> list[str]:
    """``stbench plan``'s lines for a seeds-until-decided space: ``plan_lines`` at the spread the store already
    shows for these comparisons (the median SD of their paired differences, from 3 pairs), else one margin.
    ``space``: the budget grid's space (``budget_space``); ``store_trials``: the store's trials frame, if any."""
    settings = settings_for(space, max(space.stack_sizes("cuda" if space.resources.gpu > 0 else "cpu").values()),
                            selected)
    cells = len({(c.architecture, c.dataset) for c in settings.family}
                | {(c.baseline, c.dataset) for c in settings.family})
    sd, source = None, ""
    if store_trials is not None and len(store_trials):
        ids = {t.trial_id for t in space.trials()}
        frame = store_trials[store_trials["trial_id"].isin(ids)]
        sds = [float(np.std(d, ddof=1)) for c in settings.family
               if len(d := paired_values(frame, c, settings.metric)) >= 3]
        if sds:
            sd, source = float(np.median(sds)), f"the median over {len(sds)} comparison(s) in the store"
    return plan_lines(settings, cells, sd, source)
