"""Reading AsyncActor manifests for local runs (`asya dev`).

The same YAML files a user applies to a cluster. Locally only the fields that change how a
handler runs matter; `image`, `scaling` and pod settings are ignored (and said so in docs).
`parse_actor` is pure; `load_actors` walks files and collects every problem it finds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asya_shared import names

API_GROUP = "asya.sh"
KIND = "AsyncActor"


class ManifestError(ValueError):
    """A manifest that cannot be run; the message names the file and the field."""


@dataclass(frozen=True)
class ActorManifest:
    name: str
    handler: str
    source: str  # file the manifest came from, for messages
    concurrency: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    actor_timeout: str | None = None
    resiliency: Mapping[str, Any] | None = None


def parse_actor(document: Mapping[str, Any], *, source: str) -> ActorManifest:
    metadata = document.get("metadata") or {}
    spec = document.get("spec")
    where = f"{source}: AsyncActor {metadata.get('name', '?')!r}"
    if not isinstance(spec, dict):
        raise ManifestError(f"{where} has no spec")
    name = spec.get("actor") or metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}: set metadata.name (or spec.actor)")
    try:
        names.check_actor_name(name)
    except names.InvalidName as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if name in names.CREW:
        raise ManifestError(f"{where}: {name!r} is reserved for Asya's crew actors")
    handler = spec.get("handler")
    if not isinstance(handler, str) or "." not in handler:
        raise ManifestError(
            f"{where}: spec.handler must name module.function or module.Class.method, "
            f"got {handler!r}"
        )
    concurrency = spec.get("concurrency", 1)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ManifestError(f"{where}: spec.concurrency must be a positive integer")
    resiliency = spec.get("resiliency")
    if resiliency is not None and not isinstance(resiliency, dict):
        raise ManifestError(f"{where}: spec.resiliency must be an object")
    timeout = (resiliency or {}).get("actorTimeout")
    return ActorManifest(
        name=name,
        handler=handler,
        source=source,
        concurrency=concurrency,
        env=_env(spec.get("env"), where),
        actor_timeout=str(timeout) if timeout is not None else None,
        resiliency=resiliency,
    )


def _env(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ManifestError(f"{where}: spec.env must be a list of {{name, value}}")
    env: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ManifestError(f"{where}: every spec.env item needs a name: {item!r}")
        if "valueFrom" in item:
            raise ManifestError(
                f"{where}: env {item['name']!r} uses valueFrom, which only a cluster can "
                "resolve; give a literal value for local runs"
            )
        value = item.get("value", "")
        env[item["name"]] = value if isinstance(value, str) else json.dumps(value)
    return env


def is_async_actor(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and document.get("kind") == KIND
        and str(document.get("apiVersion", "")).startswith(f"{API_GROUP}/")
    )


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")))
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return files


def load_actors(paths: Iterable[str | Path]) -> list[ActorManifest]:
    """Every AsyncActor under `paths`; raises ManifestError listing all problems found."""
    actors: list[ActorManifest] = []
    problems: list[str] = []
    for path in manifest_files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {exc}")
            continue
        for document in documents:
            if not is_async_actor(document):
                continue
            try:
                actors.append(parse_actor(document, source=str(path)))
            except ManifestError as exc:
                problems.append(str(exc))
    seen: dict[str, str] = {}
    for actor in actors:
        if actor.name in seen:
            problems.append(
                f"actor {actor.name!r} is defined twice ({seen[actor.name]} and {actor.source})"
            )
        seen[actor.name] = actor.source
    if problems:
        raise ManifestError("\n".join(problems))
    if not actors:
        listed = ", ".join(str(p) for p in paths)
        raise ManifestError(f"no AsyncActor manifests (apiVersion {API_GROUP}/...) in {listed}")
    return actors
