"""Do the seeds of a sweep pair? Seed k of every configuration of one model must start from
the same initial weights and see the same data order (start.json, lib/lifecycle/start_record.py).

Read from the run directories only. A run without start.json (made before it existed, or
failed before its first step) cannot be checked and is counted as such; a run whose start
differs from the other configurations' run of the same seed is reported by name, and the
comparisons drop that seed from every pair it is in.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lib.lifecycle import rundir, start_record

KEYS = ("weights", "data_order")


@dataclass
class ModelPairing:
    model: str
    configs: int
    seeds: list
    checked: int = 0                                     # runs whose start.json was read
    unchecked: list = field(default_factory=list)        # run ids without a usable start.json
    mismatched: list = field(default_factory=list)       # (run id, what differs, reference run id)


def read_start(run) -> dict | None:
    data = rundir.read_json(run.run_dir / start_record.FILE)
    return data if isinstance(data, dict) and all(isinstance(data.get(k), str) for k in KEYS) else None


def check(runs) -> dict[str, ModelPairing]:
    """Per model: which runs were checked, and which start differently from their seed's first run."""
    out: dict[str, ModelPairing] = {}
    for model in dict.fromkeys(r.spec.get("model") for r in runs):
        group = [r for r in runs if r.spec.get("model") == model]
        seeds = sorted({r.spec.get("seed") for r in group}, key=str)
        result = ModelPairing(model, len({r.config_id for r in group}), seeds)
        for seed in seeds:
            reference = None
            for run in (r for r in group if r.spec.get("seed") == seed):
                start = read_start(run)
                if start is None:
                    result.unchecked.append(run.run_id)
                    continue
                result.checked += 1
                if reference is None:
                    reference = (run.run_id, start)
                    continue
                differs = [k for k in KEYS if start[k] != reference[1][k]]
                if differs:
                    result.mismatched.append((run.run_id, " and ".join(k.replace("_", " ") for k in differs),
                                              reference[0]))
        out[model] = result
    return out


def unpaired_runs(pairing: dict[str, ModelPairing]) -> set:
    """Run ids whose start differs from their seed's reference run (to drop from comparisons)."""
    return {run_id for p in pairing.values() for run_id, _what, _ref in p.mismatched}


def statements(pairing: dict[str, ModelPairing]) -> list[str]:
    """One line per model for the report, and one per mismatched run."""
    lines = []
    for p in pairing.values():
        total = p.checked + len(p.unchecked)
        if p.mismatched:
            lines.append(f"NOT PAIRED {p.model}: {len(p.mismatched)} of {total} runs start differently from the "
                         "other configurations' run of the same seed; those seeds are dropped from their comparisons")
            lines += [f"NOT PAIRED {p.model}: {run_id} has other {what} than {ref}" for run_id, what, ref in p.mismatched]
        elif p.checked:
            lines.append(f"paired {p.model}: seed k of every configuration ({p.configs} configurations, "
                         f"{len(p.seeds)} seeds) started from the same initial weights and the same data order "
                         f"(start.json of {p.checked} runs)")
        if p.unchecked:
            lines.append(f"unchecked {p.model}: {len(p.unchecked)} of {total} runs have no start.json (failed before "
                         f"training, or made by an older knlp), e.g. {p.unchecked[0]}; they are paired by seed number only")
    return lines
