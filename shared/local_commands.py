"""Running a manifest's command as a local process (replicas and `job` metrics in local mode)."""

from __future__ import annotations

import sys


def local_argv(argv: list[str]) -> list[str]:
    """Manifests say `python`; locally that must be the interpreter running the service, which has
    the project installed."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return argv
