"""One entry-point wrapper for `make export` and `make bench-sparse`: bad input is one line, exit 2."""
from __future__ import annotations

import sys


def main(prefix: str, body) -> int:
    from lib.lifecycle.checkpoint import CheckpointError
    from lib.configuration.config import ConfigError
    from lib.extras import ExtraUnavailable
    from lib.training.task import BadInput

    try:
        return body()
    except (BadInput, ConfigError, CheckpointError, ExtraUnavailable) as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
