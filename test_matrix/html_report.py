"""report.html: the whole report of a sweep in one self-contained page.

No network: styles and the little script are inline, plots are embedded as base64 PNG,
per-configuration curves are inline SVG, and a Content-Security-Policy forbids every
outside load, so the file works from a file:// URL and can be mailed around.

Order: verdict table, configuration table, plots, fairness flags and notes, failed runs,
then one collapsed section per configuration (curves, per-layer sparsity, the
hyperparameters in which configurations differ, its runs). Every table sorts by a click
on its header; the filter box hides configuration sections and table rows that do not
match, so a sweep of 1,000 runs stays browsable.
"""
from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.lifecycle.atomic import atomic_write_text
from test_matrix import comparisons as comparisons_mod
from test_matrix import results, stats
from test_matrix import state as run_state

REPORT_HTML = "report.html"
# hparams that name a run rather than configure it
RUN_KEYS = {"run_id", "seed"}
VERDICTS_OPEN = 100  # longer verdict tables show the better/worse rows and fold the rest
VERDICT_CLASS = {stats.BETTER: "better", stats.WORSE: "worse", stats.NO_DIFFERENCE: "none", stats.TOO_FEW: "few"}

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#eee;cursor:pointer;user-select:none}th.asc:after{content:" \\25b2"}th.desc:after{content:" \\25bc"}
td.v-better{background:#1b7f3b;color:#fff}td.v-worse{background:#b3261e;color:#fff}
td.v-none{background:#d9d9d9}td[class^=v-]{white-space:nowrap}td.v-few{background:#fff3c4}
details{margin:.3em 0;border:1px solid #ddd;padding:.2em .6em}summary{cursor:pointer}
.flag{color:#b3261e}.bar{background:#4a78b5;height:10px;display:inline-block}
img{max-width:100%;border:1px solid #eee}svg{background:#fafafa;border:1px solid #eee;margin-right:8px}
#filter{padding:3px;width:24em}.muted{color:#666}
"""

SCRIPT = """
function cellValue(row, i){const t=row.cells[i]?row.cells[i].textContent.trim():'';
  const n=parseFloat(t.replace(/^[<>]/,''));return isNaN(n)?t.toLowerCase():n;}
function sortTable(th){const table=th.closest('table'),i=[...th.parentNode.cells].indexOf(th);
  const asc=!th.classList.contains('asc');table.querySelectorAll('th').forEach(h=>h.classList.remove('asc','desc'));
  th.classList.add(asc?'asc':'desc');const body=table.tBodies[0],rows=[...body.rows];
  rows.sort((a,b)=>{const x=cellValue(a,i),y=cellValue(b,i);
    if(typeof x===typeof y)return (x<y?-1:x>y?1:0)*(asc?1:-1);return (typeof x==='number'?-1:1)*(asc?1:-1);});
  rows.forEach(r=>body.appendChild(r));}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
document.getElementById('filter').addEventListener('input',e=>{const q=e.target.value.toLowerCase();
  document.querySelectorAll('table.sortable tbody tr').forEach(r=>{r.hidden=q&&!r.textContent.toLowerCase().includes(q);});
  document.querySelectorAll('details.config').forEach(d=>{d.hidden=q&&!d.dataset.config.includes(q);});});
"""


@dataclass
class Inputs:
    title: str
    selection: results.Selection
    per_run: pd.DataFrame
    table: pd.DataFrame           # report.aggregate
    shown: pd.DataFrame           # report.display_table
    notes: list
    comparisons: list
    plots: list


def esc(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return html.escape(str(value))


def _two(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_html(frame: pd.DataFrame, cell_class=None, table_id: str = "") -> str:
    """A sortable table; cell_class(column, value) may give a cell a CSS class."""
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, values):
            css = cell_class(column, value) if cell_class else None
            cells.append(f"<td class=\"{css}\">{esc(value)}</td>" if css else f"<td>{esc(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ident = f" id=\"{table_id}\"" if table_id else ""
    return f"<table class=\"sortable\"{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def verdict_section(comparisons) -> str:
    if not comparisons:
        return "<h2>Verdicts</h2><p class=\"muted\">No comparison: the sweep has no two configurations at one sparsity.</p>"
    column = "verdict (a vs b)"
    css = lambda col, value: f"v-{VERDICT_CLASS.get(value, 'few')}" if col == column else None  # noqa: E731
    head = ("<h2>Verdicts</h2><p>Paired by seed on the final metric; paired t-test with Holm's correction over "
            f"all {len(comparisons)} comparisons, 5% level. 'detectable (80%)': the smallest true difference "
            "these seeds detect with 80% power. Details and method: report.md.</p>")
    if len(comparisons) <= VERDICTS_OPEN:
        return head + table_html(comparisons_mod.display(comparisons), css, "verdicts")
    # a long family: the differences found first, every comparison one click away
    found = [c for c in comparisons if c.verdict in (stats.BETTER, stats.WORSE)]
    shown = (table_html(comparisons_mod.display(found), css, "verdicts") if found
             else "<p id=\"verdicts\">No comparison found a detectable difference.</p>")
    return (head + f"<p>{len(found)} of {len(comparisons)} comparisons found a difference:</p>" + shown
            + f"<details><summary>all {len(comparisons)} comparisons</summary>"
            + table_html(comparisons_mod.display(comparisons), css, "all-verdicts") + "</details>")


def plots_section(plot_paths) -> str:
    parts = []
    for path in plot_paths:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt=\"{esc(Path(path).stem)}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{esc(Path(path).name)}</figcaption></figure>")
    return "<h2>Plots</h2>" + ("".join(parts) or "<p class=\"muted\">none</p>")


def notes_section(notes, selection) -> str:
    items = [f"<li class=\"{'flag' if n.split(' ', 1)[0].isupper() else ''}\">{esc(n)}</li>" for n in notes]
    items += [f"<li>left out: {esc(run_id)}: {esc(why)}</li>" for run_id, why in selection.excluded]
    items += [f"<li>not started yet: {esc(run_id)}</li>" for run_id in selection.missing]
    return "<h2>Fairness flags and notes</h2>" + (f"<ul>{''.join(items)}</ul>" if items else "<p>none</p>")


def failed_section(per_run: pd.DataFrame) -> str:
    failed = per_run[per_run["state"] == run_state.FAILED][["run_id", "reason"]] if len(per_run) else per_run
    if not len(failed):
        return "<h2>Failed runs</h2><p>none</p>"
    return ("<h2>Failed runs</h2><p>Rerun them with <code>make test-matrix RERUN=failed</code>.</p>"
            + table_html(failed.reset_index(drop=True)))


def _flat(tree, prefix: str = "") -> dict:
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = tuple(tree) if isinstance(tree, list) else tree
    return out


def differing_hparams(runs) -> dict[str, dict]:
    """config id -> {hparam: value} for the resolved hyperparameters that differ between configurations."""
    per_config: dict[str, dict] = {}
    for run in runs:
        if isinstance(run.hparams, dict) and run.config_id not in per_config:
            per_config[run.config_id] = {k: v for k, v in _flat(run.hparams).items() if k not in RUN_KEYS}
    keys = sorted({k for values in per_config.values() for k in values})
    differing = [k for k in keys if len({repr(values.get(k)) for values in per_config.values()}) > 1]
    return {config: {k: values.get(k) for k in differing} for config, values in per_config.items()}


def svg_curves(runs, metric: str, width: int = 360, height: int = 150) -> str:
    """Test metric vs step: each seed thin, their mean thick; axis range written at the corners."""
    series = [[(r["step"], r[metric]) for r in run.metrics
               if isinstance(r.get("step"), (int, float)) and results.number(r.get(metric)) is not None]
              for run in runs]
    series = [s for s in series if s]
    if not series:
        return "<p class=\"muted\">no metrics recorded</p>"
    xs = [x for s in series for x, _ in s]
    ys = [y for s in series for _, y in s]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1, (y1 - y0) or 1
    pad = 6

    def points(s):
        return " ".join(f"{pad + (x - x0) / span_x * (width - 2 * pad):.1f},"
                        f"{height - pad - (y - y0) / span_y * (height - 2 * pad):.1f}" for x, y in s)

    by_step: dict = {}
    for s in series:
        for x, y in s:
            by_step.setdefault(x, []).append(y)
    mean = sorted((x, sum(v) / len(v)) for x, v in by_step.items())
    lines = "".join(f"<polyline fill=\"none\" stroke=\"#9bb3d6\" stroke-width=\"1\" points=\"{points(s)}\"/>"
                    for s in series)
    lines += f"<polyline fill=\"none\" stroke=\"#1f4e8c\" stroke-width=\"2\" points=\"{points(mean)}\"/>"
    labels = (f"<text x=\"{pad}\" y=\"12\" font-size=\"10\">{esc(metric)} {y1:.4g}</text>"
              f"<text x=\"{pad}\" y=\"{height - 8}\" font-size=\"10\">{y0:.4g} (step {x0:g})</text>"
              f"<text x=\"{width - pad}\" y=\"{height - 8}\" font-size=\"10\" text-anchor=\"end\">step {x1:g}</text>")
    return (f"<svg width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{esc(metric)} vs step\">"
            f"{lines}{labels}</svg>")


def layers_html(runs) -> str:
    """Per-layer achieved sparsity, mean over the completed seeds (summary.json 'layers')."""
    layers: dict[str, list] = {}
    sizes: dict[str, int] = {}
    for run in runs:
        for row in (run.summary or {}).get("layers") or []:
            if isinstance(row, dict) and results.number(row.get("sparsity")) is not None:
                layers.setdefault(str(row.get("layer")), []).append(float(row["sparsity"]))
                sizes[str(row.get("layer"))] = row.get("size")
    if not layers:
        return ""
    rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(sizes[name])}</td><td>{100 * sum(v) / len(v):.1f}</td>"
                   f"<td><span class=\"bar\" style=\"width:{100 * sum(v) / len(v):.0f}px\"></span></td></tr>"
                   for name, v in layers.items())
    return ("<h4>Per-layer sparsity (mean over seeds)</h4><table class=\"sortable\"><thead><tr><th>layer</th>"
            f"<th>weights</th><th>sparsity %</th><th></th></tr></thead><tbody>{rows}</tbody></table>")


def config_sections(runs, table: pd.DataFrame) -> str:
    by_config: dict[str, list] = {}
    for run in runs:
        by_config.setdefault(run.config_id, []).append(run)
    differing = differing_hparams(runs)
    means = {row["config"]: row for _, row in table.iterrows()} if len(table) else {}
    parts = []
    for config, members in by_config.items():
        row = means.get(config)
        metric = row["metric"] if row is not None else "accuracy"
        final = row["final_mean"] if row is not None else math.nan
        head = (f"{esc(config)} <span class=\"muted\">n={row['n'] if row is not None else 0}, final {esc(metric)} "
                f"{'-' if final is None or math.isnan(final) else f'{final:.2f}'}</span>")
        hp = differing.get(config, {})
        hp_html = ("<h4>Hyperparameters that differ between configurations</h4><table><tbody>"
                   + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in hp.items())
                   + "</tbody></table>") if hp else ""
        run_rows = "".join(
            f"<tr><td>{esc(r.run_id)}</td><td>{esc(r.state)}</td>"
            f"<td>{_two(results.metric_value((r.summary or {}).get('final'), metric))}</td>"
            f"<td>{esc(r.reason or '')}</td></tr>" for r in members)
        runs_html = ("<h4>Runs</h4><table class=\"sortable\"><thead><tr><th>run</th><th>state</th>"
                     f"<th>final {esc(metric)}</th><th>reason</th></tr></thead><tbody>{run_rows}</tbody></table>")
        completed = [r for r in members if r.state == run_state.COMPLETED]
        parts.append(f"<details class=\"config\" data-config=\"{esc(config.lower())}\"><summary>{head}</summary>"
                     f"{svg_curves(members, metric)}{layers_html(completed)}{hp_html}{runs_html}</details>")
    return "<h2>Configurations</h2>" + "".join(parts)


def render(inputs: Inputs) -> str:
    per_run = inputs.per_run
    counts = per_run["state"].value_counts().to_dict() if len(per_run) else {}
    planned = len(inputs.selection.plan["runs"]) if inputs.selection.plan else len(per_run)
    summary = (f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from the runs' own files. {planned} runs planned: "
               f"{counts.get(run_state.COMPLETED, 0)} completed, {counts.get(run_state.FAILED, 0)} failed.")
    body = [f"<h1>Test matrix report: {esc(inputs.title)}</h1><p>{esc(summary)}</p>",
            "<p><input id=\"filter\" placeholder=\"filter tables and configurations\" aria-label=\"filter\"></p>",
            verdict_section(inputs.comparisons),
            "<h2>Configuration table</h2><p>Mean &plusmn; sample standard deviation over the completed seeds.</p>"
            + table_html(inputs.shown, table_id="configurations"),
            plots_section(inputs.plots), notes_section(inputs.notes, inputs.selection), failed_section(per_run),
            config_sections(inputs.selection.runs, inputs.table)]
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">"
            f"<title>{esc(inputs.title)}: knlp report</title><style>{STYLE}</style></head><body>"
            + "".join(body) + f"<script>{SCRIPT}</script></body></html>\n")


def write(results_dir: Path, inputs: Inputs) -> Path:
    path = Path(results_dir) / REPORT_HTML
    atomic_write_text(path, render(inputs))
    return path
