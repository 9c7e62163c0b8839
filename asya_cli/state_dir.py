"""Where `asya dev` keeps its state, found as git finds `.git`.

`asya send`, `asya submit`, `asya sump` and the other commands run from any directory of a
project: without --state-dir or ASYA_STATE_DIR they take the nearest `.asya` in the current
directory or above it, stopping at the project's root (the first directory holding `.git`).
With none found it is `.asya` here, which `asya dev` creates.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from asya_shared import env

NAME = ".asya"
HELP = (
    f"state directory of `asya dev` (default: ${env.STATE_DIR}, else the nearest {NAME} here "
    "or above, up to the project's root)"
)


def default(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """The state directory to use when none is given on the command line."""
    environ = os.environ if environ is None else environ
    if environ.get(env.STATE_DIR):
        return environ[env.STATE_DIR]
    here = (cwd or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / NAME).is_dir():
            return str(directory / NAME)
        if (directory / ".git").exists():
            break
    return NAME
