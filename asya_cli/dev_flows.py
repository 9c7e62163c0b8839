"""The named flows `asya dev` serves: every `flows.yaml` (or `flows.yml`) under its PATHs.

One file is served as it is. Several are merged into one, written to the state directory,
as long as no flow name appears twice: two flows of one name in two files is refused with
both files named, rather than one silently winning. Every file is checked with the
gateway's own rules before anything starts, so a mistake stops `asya dev` at once with the
file and the entry named.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from asya_cli import manifests

__all__ = ["FLOWS_FILE_NAMES", "FlowsConflict", "find", "merge", "prepare"]

FLOWS_FILE_NAMES = ("flows.yaml", "flows.yml")


class FlowsConflict(ValueError):
    """The flows files cannot be served together; the message names the files."""


def find(paths: Iterable[str | Path]) -> list[Path]:
    """The flows files among `paths` and under the directories among them, in a stable
    order."""
    found = [p for p in manifests.manifest_files(paths) if p.name in FLOWS_FILE_NAMES]
    return sorted(dict.fromkeys(p.resolve() for p in found))


def merge(documents: Iterable[tuple[Path, Any]]) -> dict[str, Any]:
    """One flows document of several (`(file, parsed YAML)` pairs, each already valid);
    FlowsConflict when a name is in more than one (pure)."""
    entries: list[Any] = []
    origin: dict[str, Path] = {}
    for path, document in documents:
        for entry in (document or {}).get("flows") or []:
            name = entry["name"]
            if name in origin:
                raise FlowsConflict(
                    f"flow {name!r} is defined in both {origin[name]} and {path}; rename one "
                    "(flow names are one namespace across every flows.yaml under PATH)"
                )
            origin[name] = path
            entries.append(entry)
    return {"flows": entries}


def prepare(paths: Iterable[str | Path], state_dir: Path) -> Path | None:
    """The flows file for the gateway: None without any, the one found, or the merge of
    several written to `state_dir`. Raises FlowsConflict, or asya_gateway.flows.FlowsError
    naming the file and entry that the gateway would refuse."""
    from asya_gateway.flows import load_flows  # the gateway's rules, not a copy of them

    files = find(paths)
    for path in files:
        load_flows(path)
    if not files:
        return None
    if len(files) == 1:
        return files[0]
    merged = merge((path, yaml.safe_load(path.read_text(encoding="utf-8"))) for path in files)
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / "flows.yaml"
    header = "# Written by `asya dev`: the merge of " + ", ".join(map(str, files)) + "\n"
    target.write_text(header + yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
    return target
