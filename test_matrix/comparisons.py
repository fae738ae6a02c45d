"""The verdicts of a sweep: every method against every other one and against dense, paired by seed.

For each model and target sparsity, each pruned configuration is compared with each other
one at that sparsity and with the dense run of the same optimizer (AdamWPrune's dense
reference is its base optimizer, which it equals with pruning off). Values are the final
test metric of the completed runs. All comparisons of one report form one family for
Holm's correction; verdicts are at the 5% level (test_matrix/stats.py).

Written as comparisons.csv and as the verdict table of report.md / report.html; the sweep
prints verdict_lines() at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from lib.configuration import model_registry
from lib.configuration.config import ConfigError
from lib.optimizers import registry as optimizer_registry
from test_matrix import plots, results, stats
from test_matrix import state as run_state

COMPARISONS_CSV = "comparisons.csv"
# The difference a reader wants to be able to detect (Kconfig, test-matrix menu), per metric.
DETECT_SYMBOLS = {"accuracy": "TEST_MATRIX_DIFFERENCE_ACCURACY", "perplexity": "TEST_MATRIX_DIFFERENCE_PERPLEXITY"}
DETECT_DEFAULTS = {"accuracy": 0.2, "perplexity": 0.5}
UNITS = {"accuracy": "points", "perplexity": ""}


@dataclass
class Comparison:
    model: str
    metric: str
    sparsity: float        # target sparsity in percent
    a: str                 # configuration ids; diff = a - b
    b: str
    a_label: str
    b_label: str
    against: str           # "method" or "dense"
    result: stats.Paired
    start_dropped: int     # seeds dropped because the two runs did not start alike
    detect: float          # the difference the user wants to detect
    holm_p: float = math.nan
    verdict: str = stats.TOO_FEW
    mdd: float = math.nan              # detectable at 80% power with these seeds
    seeds_needed: int | None = None    # seeds to detect `detect` at 80% power

    def __post_init__(self):
        self.mdd = stats.min_detectable_difference(self.result.sd, self.result.n)
        self.seeds_needed = stats.seeds_needed(self.detect, self.result.sd)


def detect_differences(values) -> dict[str, float]:
    """{metric: difference to detect} from a config (a Config, a dict of config values, or None)."""
    get = (values.get if values is not None else (lambda _key, default=None: default))
    out = {}
    for metric, symbol in DETECT_SYMBOLS.items():
        raw = get(symbol, None)
        value = DETECT_DEFAULTS[metric] if raw is None else raw
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"CONFIG_{symbol}={raw!r} is not a positive number; set the {metric} difference to "
                              f"detect (default {DETECT_DEFAULTS[metric]}) under Test matrix in 'make menuconfig'")
        out[metric] = value
    return out


def _dense_partner(spec: dict) -> str:
    """The optimizer whose dense run a pruned run is compared with: its base, if it has bases."""
    entry = optimizer_registry.BY_NAME.get(spec.get("optimizer"))
    if entry is not None and entry.bases:
        return (spec.get("optimizer_args") or {}).get("base", optimizer_registry.BASES[0])
    return spec.get("optimizer")


def _per_seed(runs, metric: str, unpaired: set) -> dict:
    """seed -> final metric of one configuration's runs; None for a failed/unfinished/unpaired seed."""
    values = {}
    for run in runs:
        value = None
        if run.state == run_state.COMPLETED and run.run_id not in unpaired:
            value = results.metric_value((run.summary or {}).get("final"), metric)
        values[run.spec.get("seed")] = value
    return values


def build(runs, detect: dict[str, float], unpaired: set = frozenset()) -> list[Comparison]:
    """Every comparison of the report, with Holm-adjusted p-values and verdicts."""
    configs: dict[str, list] = {}
    for run in runs:
        configs.setdefault(run.config_id, []).append(run)
    out = []
    for model in dict.fromkeys(r.spec.get("model") for r in runs):
        members = {c: rs for c, rs in configs.items() if rs[0].spec.get("model") == model}
        metric = next(((r.summary or {}).get("metric") for rs in members.values() for r in rs
                       if (r.summary or {}).get("metric") in results.HIGHER_IS_BETTER),
                      model_registry.metric_of(model))
        dense = {}  # optimizer -> its (first) dense configuration
        for c, rs in members.items():
            if rs[0].spec.get("pruning") == "none":
                dense.setdefault(rs[0].spec.get("optimizer"), c)
        pruned = [c for c, rs in members.items() if rs[0].spec.get("pruning") != "none"]
        levels = sorted({members[c][0].spec.get("target_sparsity") for c in pruned})
        dropped_by_start = {c: {r.spec.get("seed") for r in rs if r.run_id in unpaired} for c, rs in members.items()}
        # configurations that differ in more than method and sparsity (e.g. a learning rate) go by their ids
        keys = {c: (plots.method_label(rs[0].spec), rs[0].spec.get("target_sparsity")) for c, rs in members.items()}
        taken = list(keys.values())
        labels = {c: (c if taken.count(key) > 1 else key[0]) for c, key in keys.items()}

        def compare(a, b, against, level):
            lost = dropped_by_start[a] | dropped_by_start[b]
            # a seed whose start differs on one side is dropped from both
            va = {k: (None if k in lost else v) for k, v in _per_seed(members[a], metric, unpaired).items()}
            vb = {k: (None if k in lost else v) for k, v in _per_seed(members[b], metric, unpaired).items()}
            out.append(Comparison(model, metric, 100.0 * level, a, b, labels[a], labels[b], against,
                                  stats.paired(va, vb), len(lost & (set(va) | set(vb))), detect[metric]))

        for level in levels:
            at_level = [c for c in pruned if members[c][0].spec.get("target_sparsity") == level]
            # the later configuration first: the plan lists AdamWPrune's state pruning last, so
            # lines read "adamwprune bitter7 vs adamw magnitude"
            for b, a in combinations(at_level, 2):
                compare(a, b, "method", level)
            for a in at_level:
                partner = dense.get(_dense_partner(members[a][0].spec))
                if partner is not None:
                    compare(a, partner, "dense", level)
    adjusted = stats.holm([c.result.t_p for c in out])
    for comparison, p in zip(out, adjusted):
        comparison.holm_p = p
        comparison.verdict = stats.verdict(comparison.result.diff, p, results.HIGHER_IS_BETTER[comparison.metric])
    return out


def frame(comparisons: list[Comparison]) -> pd.DataFrame:
    """comparisons.csv: one row per comparison, numbers unrounded."""
    rows = []
    for c in comparisons:
        r = c.result
        rows.append({"model": c.model, "metric": c.metric, "target_sparsity": c.sparsity, "a": c.a, "b": c.b,
                     "against": c.against, "n_pairs": r.n, "dropped_seeds": r.dropped,
                     "dropped_start_differs": c.start_dropped, "mean_a": r.mean_a, "mean_b": r.mean_b,
                     "diff": r.diff, "ci95_low": r.ci_low, "ci95_high": r.ci_high, "sd_diff": r.sd,
                     "t_p": r.t_p, "wilcoxon_p": r.wilcoxon_p, "holm_p": c.holm_p, "verdict": c.verdict,
                     "min_detectable_diff_80": c.mdd, "detect_diff": c.detect, "seeds_needed": c.seeds_needed})
    return pd.DataFrame(rows)


def _num(value, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None or math.isnan(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def display(comparisons: list[Comparison]) -> pd.DataFrame:
    """The human verdict table (report.md, report.html)."""
    rows = []
    for c in comparisons:
        r = c.result
        needed = c.seeds_needed
        rows.append({"model": c.model, "target %": f"{c.sparsity:.0f}", "a": c.a_label, "b": c.b_label,
                     "verdict (a vs b)": c.verdict, "a - b": _num(r.diff, signed=True),
                     "95% CI": "-" if math.isnan(r.ci_low) else f"{r.ci_low:+.2f} .. {r.ci_high:+.2f}",
                     "n": r.n, "dropped": r.dropped, "t-test p": _p(r.t_p), "Holm p": _p(c.holm_p),
                     "Wilcoxon p": _p(r.wilcoxon_p), "detectable (80%)": _num(c.mdd),
                     "difference to detect": f"{c.detect:g}", "seeds needed": needed if needed else "-"})
    return pd.DataFrame(rows)


def verdict_lines(comparisons: list[Comparison], limit: int = 60) -> list[str]:
    """One line per comparison, as the sweep prints them at the end.

    Past `limit` comparisons only the better/worse verdicts are printed, and a count of the
    others: every one is in comparisons.csv and the reports.
    """
    lines = []
    shown = comparisons
    if len(comparisons) > limit:
        shown = [c for c in comparisons if c.verdict in (stats.BETTER, stats.WORSE)]
    for c in shown:
        r = c.result
        unit = f" {UNITS[c.metric]}" if UNITS[c.metric] else ""
        head = f"verdict {c.model} {c.sparsity:.0f}%: {c.a_label} vs {c.b_label}: "
        if r.n < 2:
            lines.append(head + f"{stats.TOO_FEW} ({r.n} paired seeds, {r.dropped} dropped)")
            continue
        needed = c.seeds_needed
        lines.append(head + f"{c.verdict} ({c.metric} {r.diff:+.2f}{unit}, 95% CI {r.ci_low:+.2f}..{r.ci_high:+.2f}, "
                     f"p {_p(r.t_p)}, Holm {_p(c.holm_p)}, n {r.n}"
                     + (f", {r.dropped} dropped" if r.dropped else "")
                     + f"; detectable at 80% power: {_num(c.mdd)}; seeds to detect {c.detect:g}: "
                     + (str(needed) if needed else "-") + ")")
    if len(shown) < len(comparisons):
        lines.append(f"verdicts: {len(comparisons) - len(shown)} of {len(comparisons)} comparisons found no detectable "
                     f"difference or had too few pairs (not listed); all are in {COMPARISONS_CSV} and report.html")
    return lines
