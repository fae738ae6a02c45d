"""The answer to a sweep: one row per configuration (seeds aggregated), CSV, Markdown, plots.

Numbers come only from each run's summary.json / hparams.json / metrics.jsonl. Seeds of
one configuration aggregate as mean and sample standard deviation (n-1; undefined for
n = 1) over the completed runs; failed runs are counted, never averaged in.

Files written at the top of the results directory:
  report.md   the table, the verdicts, notes (fairness, pairing of seeds, unequal budgets,
              failures, left-out runs), plot links
  report.html the same in one self-contained page (test_matrix/html_report.py)
  summary.csv one row per configuration, numeric columns
  runs.csv    one row per run (the numbers the summary aggregates)
  comparisons.csv  one row per paired comparison (test_matrix/comparisons.py)
  plots/      metric_vs_sparsity.png, curves-<model>.png, memory.png
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pandas as pd

from lib.configuration import config as lib_config, model_registry
from lib.lifecycle.atomic import atomic_write_text
from test_matrix import comparisons as comparisons_mod, html_report, pairing, plan as plan_file, plots, results
from test_matrix import state as run_state

REPORT_MD, SUMMARY_CSV, RUNS_CSV, PLOTS = "report.md", "summary.csv", "runs.csv", "plots"
# resolved hyperparameters (hparams.json) that every pruned run of a model must share,
# and those every run of a model must share (SPEC: one schedule and one budget)
SCHEDULE_KEYS = ("warmup_end", "ramp_end", "frequency")
BUDGET_KEYS = ("total_steps", "effective_batch")


def _percent(fraction) -> float | None:
    value = results.number(fraction)
    return None if value is None else 100.0 * value


def run_rows(runs: list[results.Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        spec, summary = run.spec, run.summary or {}
        metric = summary.get("metric") or model_registry.metric_of(spec.get("model"))
        row = {"run_id": run.run_id, "config": run.config_id, "model": spec.get("model"),
               "optimizer": spec.get("optimizer"), "variant": spec.get("variant") or "",
               "pruning": spec.get("pruning"), "target_sparsity": _percent(spec.get("target_sparsity")),
               "seed": spec.get("seed"), "state": run.state, "reason": run.reason or "",
               "unequal_budget": bool(spec.get("unequal_budget")), "metric": metric,
               "final": None, "best": None, "achieved_sparsity": None, "total_time_s": None}
        if run.state == run_state.COMPLETED:
            row.update(final=results.metric_value(summary.get("final"), metric),
                       best=results.metric_value(summary.get("best"), metric),
                       achieved_sparsity=_percent(summary.get("achieved_sparsity")),
                       total_time_s=results.number(summary.get("total_time_s")))
            row.update({f"memory.{k}": v for k, v in results.flat_numbers(summary.get("memory")).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(values: pd.Series) -> float:
    values = values.dropna().astype(float)
    return float(values.mean()) if len(values) else math.nan


def _std(values: pd.Series) -> float:
    values = values.dropna().astype(float)
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def aggregate(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration, in the order configurations first appear."""
    if per_run.empty:
        return pd.DataFrame()
    memory = [c for c in per_run.columns if c.startswith("memory.")]
    rows = []
    for config, group in per_run.groupby("config", sort=False):
        done = group[(group["state"] == run_state.COMPLETED) & group["final"].notna()]
        first = group.iloc[0]
        row = {"config": config, "model": first["model"], "optimizer": first["optimizer"],
               "variant": first["variant"], "pruning": first["pruning"],
               "target_sparsity": first["target_sparsity"], "metric": first["metric"],
               "n": len(done), "failed": int((group["state"] == run_state.FAILED).sum()),
               "unfinished": int((~group["state"].isin([run_state.COMPLETED, run_state.FAILED])).sum()),
               "unequal_budget": bool(group["unequal_budget"].any())}
        for column in ("final", "best", "achieved_sparsity", "total_time_s"):
            row[f"{column}_mean"] = _mean(done[column])
            row[f"{column}_std"] = _std(done[column])
        for column in memory:
            row[column] = _mean(done[column])
        rows.append(row)
    return pd.DataFrame(rows)


def _effective_batch(hparams: dict):
    if isinstance(hparams.get("effective_batch"), int):
        return hparams["effective_batch"]
    parts = [hparams.get(k) for k in ("batch_size", "grad_acc", "world_size")]
    return math.prod(parts) if all(isinstance(p, int) for p in parts) else None


def fairness_notes(runs: list[results.Run]) -> list[str]:
    """Runs of one model whose resolved schedule or budget differs from the others'."""
    notes = []
    for model in dict.fromkeys(r.spec.get("model") for r in runs):
        group = [r for r in runs if r.spec.get("model") == model and isinstance(r.hparams, dict)]
        checks = (("pruning schedule", SCHEDULE_KEYS, [r for r in group if r.spec.get("pruning") != "none"]),
                  ("step budget", BUDGET_KEYS, [r for r in group if not r.spec.get("unequal_budget")]))
        for label, keys, members in checks:
            distinct = {}  # resolved values -> the runs that have them
            for run in members:
                resolved = dict(run.hparams, effective_batch=_effective_batch(run.hparams))
                distinct.setdefault(tuple(resolved.get(k) for k in keys), []).append(run.run_id)
            if len(distinct) > 1:
                shown = "; ".join(f"{', '.join(f'{k}={v}' for k, v in zip(keys, value))} in {ids[0]}"
                                  + (f" (+{len(ids) - 1})" if len(ids) > 1 else "")
                                  for value, ids in distinct.items())
                notes.append(f"UNFAIR {model}: runs do not share one {label}: {shown}")
    return notes


def _pm(mean: float, std: float, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _bytes(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The human table: mean ± std strings, percentages, sizes."""
    opt_col, buf_col, ratio_col = plots.memory_columns(table)
    rows = []
    for _, row in table.iterrows():
        metric = row["metric"]
        flags = []
        if row["unequal_budget"]:
            flags.append("unequal budget")
        if row["failed"]:
            flags.append(f"{row['failed']} failed")
        if row["unfinished"]:
            flags.append(f"{row['unfinished']} unfinished")
        shown = {"configuration": row["config"],
                 "target %": "dense" if row["pruning"] == "none" else f"{row['target_sparsity']:.0f}",
                 "n": row["n"],
                 f"final {metric}": _pm(row["final_mean"], row["final_std"], 2),
                 f"best {metric}": _pm(row["best_mean"], row["best_std"], 2),
                 "sparsity %": _pm(row["achieved_sparsity_mean"], row["achieved_sparsity_std"], 1),
                 "time (s)": _pm(row["total_time_s_mean"], row["total_time_s_std"], 0)}
        if opt_col:
            shown["optimizer state"] = _bytes(row[opt_col])
        if buf_col:
            shown["pruning buffers"] = _bytes(row[buf_col])
        if ratio_col:
            ratio = row[ratio_col]
            shown["state+pruning / weights"] = "-" if math.isnan(ratio) else f"{ratio:.2f}x"
        shown["notes"] = ", ".join(flags)
        rows.append(shown)
    return pd.DataFrame(rows)


def _current_specs(cfg, runs=None) -> dict[str, dict] | None:
    if cfg is None:
        return None
    from test_matrix.expand import expand
    try:
        return {r.run_id: plan_file.spec_json(r) for r in (expand(cfg) if runs is None else runs)}
    except lib_config.ConfigError:
        return None


def detect_differences(selection: results.Selection, current_cfg) -> dict[str, float]:
    """The differences to detect: the current config's, else the sweep's own (matrix.json)."""
    if current_cfg is not None:
        return comparisons_mod.detect_differences(current_cfg)
    return comparisons_mod.detect_differences((selection.plan or {}).get("config"))


def build(results_dir: Path | str, current_cfg=None, out=None, current_runs=None) -> Path:
    """Write the report of `results_dir`, print its table, where the files are and the verdicts.

    `current_runs`: `current_cfg` already expanded by the caller (None expands it here)."""
    out = out or sys.stdout
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir}: no such results directory; run 'make test-matrix' first "
                                "or give DIR=<a results directory>")
    selection = results.select(results_dir, _current_specs(current_cfg, current_runs))
    if not selection.runs:
        raise FileNotFoundError(f"{results_dir}: no run of this sweep has started yet; run 'make test-matrix'")
    detect = detect_differences(selection, current_cfg)
    per_run = run_rows(selection.runs)
    table = aggregate(per_run)
    pairs = pairing.check(selection.runs)
    notes = selection.notes + fairness_notes(selection.runs) + pairing.statements(pairs)
    verdicts = comparisons_mod.build(selection.runs, detect, pairing.unpaired_runs(pairs))
    plot_dir = results_dir / PLOTS
    made = plots.make_all(table, selection.runs, plot_dir)
    atomic_write_text(results_dir / RUNS_CSV, per_run.to_csv(index=False))
    atomic_write_text(results_dir / SUMMARY_CSV, table.to_csv(index=False))
    atomic_write_text(results_dir / comparisons_mod.COMPARISONS_CSV, comparisons_mod.frame(verdicts).to_csv(index=False))
    shown = display_table(table)
    markdown = shown.to_markdown(index=False)
    atomic_write_text(results_dir / REPORT_MD, _markdown(results_dir, selection, per_run, notes, markdown, made,
                                                         verdicts))
    html_path = html_report.write(results_dir, html_report.Inputs(
        title=results_dir.name, selection=selection, per_run=per_run, table=table, shown=shown, notes=notes,
        comparisons=verdicts, plots=made))
    print(markdown, file=out)
    for note in notes:
        print(f"note: {note}", file=out)
    for run_id, why in selection.excluded:
        print(f"left out: {run_id}: {why}", file=out)
    print(f"Report: {results_dir / REPORT_MD} and {html_path.name}  (tables: {SUMMARY_CSV}, {RUNS_CSV}, "
          f"{comparisons_mod.COMPARISONS_CSV}; plots: "
          f"{', '.join(str(p.relative_to(results_dir)) for p in made) or 'none'})", file=out)
    for line in comparisons_mod.verdict_lines(verdicts):
        print(line, file=out)
    return results_dir / REPORT_MD


def verdict_markdown(verdicts) -> list[str]:
    """The verdict section of report.md."""
    if not verdicts:
        return []
    return ["## Verdicts", "",
            "Each pruned configuration against each other one at the same target sparsity and against the "
            "dense run of its optimizer (AdamWPrune: of its base optimizer), paired by seed on the final "
            "metric: a - b is the mean of the per-seed differences, with its 95% confidence interval "
            "(Student t). The verdict uses the paired t-test after Holm's correction over all "
            f"{len(verdicts)} comparisons of this report, at the 5% level; 'no detectable difference' "
            "does not mean equal. The exact two-sided Wilcoxon signed-rank p cannot go below 2/2^n "
            "(0.0625 with 5 seeds), so with fewer than 6 seeds only the t-test can reach 5%. "
            "'detectable (80%)' is the smallest true difference this many seeds would detect with "
            "80% power at the 5% level (before Holm), from the spread of the differences seen here; "
            "the last column is how many seeds would detect the difference set in Kconfig "
            "(TEST_MATRIX_DIFFERENCE_*). Failed, unfinished or unpaired seeds are dropped from both "
            "sides ('dropped').", "",
            comparisons_mod.display(verdicts).to_markdown(index=False), ""]


def _markdown(results_dir, selection, per_run, notes, table_md, made, verdicts=()) -> str:
    counts = per_run["state"].value_counts().to_dict()
    planned = len(selection.plan["runs"]) if selection.plan else len(per_run)
    lines = [f"# Test matrix report: {results_dir.name}", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from the runs' own summary.json, hparams.json "
             f"and metrics.jsonl. {planned} runs planned: "
             + ", ".join(f"{counts.get(s, 0)} {s}" for s in (run_state.COMPLETED, run_state.FAILED))
             + (f", {planned - counts.get(run_state.COMPLETED, 0) - counts.get(run_state.FAILED, 0)} not finished"),
             "",
             "Each row is one configuration; seeds are aggregated as mean ± sample standard deviation "
             "(n-1) over the n completed seeds. Final = at the end of training, best = best evaluation "
             "during training. Sparsity is the achieved fraction of pruned prunable weights.", "",
             table_md, ""]
    lines += verdict_markdown(verdicts)
    if notes or selection.excluded or selection.missing:
        lines += ["## Notes", ""]
        lines += [f"- {note}" for note in notes]
        lines += [f"- left out: `{run_id}`: {why}" for run_id, why in selection.excluded]
        lines += [f"- not started yet: `{run_id}`" for run_id in selection.missing]
        lines.append("")
    failed = per_run[per_run["state"] == run_state.FAILED]
    if len(failed):
        lines += ["## Failed runs", "", "Rerun them with `make test-matrix RERUN=failed`.", ""]
        lines += [f"- `{row.run_id}`: {row.reason}" for row in failed.itertuples()]
        lines.append("")
    if made:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(results_dir).as_posix()})" for p in made]
        lines.append("")
    return "\n".join(lines)
