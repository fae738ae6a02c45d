"""One vocabulary from the run specification to hparams.json and lib.optimizers.create().

The pruning settings carry the names create() takes (target_sparsity, warmup_end, ramp_end,
frequency, shape, scope, nm) in the RunSpec, spec.json, hparams.json and the optimizer's
keyword arguments alike, so no hop renames a field.

Files written before that (issue 11) used other names. Readers pass what they load through
upgrade_spec() / upgrade_hparams(), so old run directories keep loading, comparing equal to
the same run and resuming. Run IDs (settings_digest) and checkpoint fingerprints are hashes
of these records: they are computed over legacy_spec() / legacy_hparams(), the record under
the old names, so an existing run keeps its ID and its last.pt still matches its hparams.json.
"""
from __future__ import annotations

# today's name -> the name spec.json used before
SPEC_LEGACY = {"target_sparsity": "sparsity", "warmup_end": "prune_warmup", "ramp_end": "prune_ramp_end",
               "frequency": "prune_frequency", "shape": "prune_shape", "scope": "prune_scope", "nm": "prune_nm"}
# hparams.json already had target_sparsity, warmup_end, ramp_end and frequency
HPARAMS_LEGACY = {"shape": "prune_shape", "scope": "prune_scope", "nm": "prune_nm"}


def _rename(data: dict, names: dict) -> dict:
    return {names.get(key, key): value for key, value in data.items()}


def upgrade_spec(data: dict) -> dict:
    """A spec dict (spec.json, matrix.json's runs) under today's names, whichever it was written with."""
    return _rename(data, {old: new for new, old in SPEC_LEGACY.items()})


def upgrade_hparams(data: dict) -> dict:
    """An hparams.json dict under today's names."""
    return _rename(data, {old: new for new, old in HPARAMS_LEGACY.items()})


def legacy_spec(data: dict) -> dict:
    """The spec dict under the names its digest has always been computed over."""
    return _rename(upgrade_spec(data), SPEC_LEGACY)


def legacy_hparams(data: dict) -> dict:
    """The hparams dict under the names its fingerprint has always been computed over."""
    return _rename(upgrade_hparams(data), HPARAMS_LEGACY)
