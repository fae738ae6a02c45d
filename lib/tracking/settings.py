"""Which tracker, project and directory a config asks for (CONFIG_TRACKER_*), resolved to values."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

KINDS = ("trackio", "wandb")
LABELS = {"trackio": "trackio", "wandb": "W&B"}


@dataclass(frozen=True)
class Settings:
    kind: str  # one of KINDS
    project: str
    directory: str  # absolute: trackio's TRACKIO_DIR, or W&B's dir (it writes DIR/wandb/)
    wandb_mode: str = "online"  # asked for; the W&B backend falls back to offline and says why

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    def ledger_key(self) -> str:
        """Where the runs go: a run sent to one tracker/project/directory is unsent to another."""
        return f"{self.kind}:{self.project}:{self.directory}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        data = json.loads(text)
        if data.get("kind") not in KINDS:
            raise ValueError(f"unknown tracker {data.get('kind')!r}; choose one of {', '.join(KINDS)}")
        return cls(**data)


def default_project(models) -> str:
    """knlp-<model>[-<model>...]: a sweep and the backfill of its results land in one project."""
    names = sorted({str(m) for m in models if m})
    return "knlp-" + "-".join(names) if names else "knlp"


def from_config(cfg, root: Path, models) -> Settings | None:
    """The tracker `cfg` selects for runs under `root` (results or runs directory), or None."""
    if cfg.TRACKER_TRACKIO:
        kind = "trackio"
        chosen = cfg.TRACKER_TRACKIO_DIR
        directory = _resolve(chosen) if chosen else Path(root) / "trackio"
    elif cfg.TRACKER_WANDB:
        kind, directory = "wandb", Path(root)
    else:
        return None
    mode = "offline" if cfg.TRACKER_WANDB and cfg.TRACKER_WANDB_OFFLINE else "online"
    return Settings(kind=kind, project=cfg.TRACKER_PROJECT or default_project(models),
                    directory=str(Path(directory).resolve()), wandb_mode=mode)


def _resolve(path: str) -> Path:
    from lib.configuration import paths

    return paths.from_root(path)
