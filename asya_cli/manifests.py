"""Reading AsyncActor (and AsyaBinding) manifests for local runs (`asya dev`).

The same YAML files a user applies to a cluster. Locally only the fields that change how a
handler runs matter; `image`, `scaling` and pod settings are ignored (and said so in docs).
An AsyaBinding whose spec.endpoint names a server runs as a bridge actor: its caller, pointed
at that URL, exactly as the operator's bridge Deployment would run it (docs/bindings.md).
`parse_actor` and `parse_binding` are pure; `load_actors` walks files and collects every
problem it finds.
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
BINDING_KIND = "AsyaBinding"


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
    if name in names.RESERVED:
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


def parse_binding(document: Mapping[str, Any], *, source: str) -> ActorManifest:
    """A binding with spec.endpoint as the actor a bridge would run: the caller's handler,
    its env from spec.caller and spec.env, the URL from spec.endpoint."""
    metadata = document.get("metadata") or {}
    spec = document.get("spec")
    where = f"{source}: AsyaBinding {metadata.get('name', '?')!r}"
    if not isinstance(spec, dict):
        raise ManifestError(f"{where} has no spec")
    endpoint = spec.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise ManifestError(
            f"{where}: asya dev runs a binding as a bridge actor calling spec.endpoint; set "
            "it to the local server's URL (e.g. http://127.0.0.1:8080)"
        )
    try:
        import pydantic

        from asya_operator import binding_render
        from asya_operator.binding_models import AsyaBinding
    except ImportError as exc:  # pydantic comes with the operator extra only
        raise ManifestError(
            f"{where}: reading bindings needs the operator's dependencies: "
            f"pip install 'asya[operator]' ({exc})"
        ) from None
    try:
        binding = AsyaBinding.from_object(dict(document))
        variables = binding_render.caller_env(binding, endpoint)
        handler = binding_render.handler(binding.spec.caller)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ManifestError(f"{where}: {problems}") from None
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    return parse_actor(
        {
            "metadata": {"name": binding.name},
            "spec": {
                "actor": binding.actor,
                "handler": handler,
                "concurrency": binding.spec.concurrency,
                "env": variables,
                "resiliency": spec.get("resiliency"),
            },
        },
        source=source,
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


def is_binding(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and document.get("kind") == BINDING_KIND
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
    """Every AsyncActor, and every AsyaBinding as its bridge actor, under `paths`; raises
    ManifestError listing all problems found."""
    actors: list[ActorManifest] = []
    problems: list[str] = []
    for path in manifest_files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {exc}")
            continue
        for document in documents:
            try:
                if is_async_actor(document):
                    actors.append(parse_actor(document, source=str(path)))
                elif is_binding(document):
                    actors.append(parse_binding(document, source=str(path)))
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
        raise ManifestError(
            f"no AsyncActor manifests (nor AsyaBindings; apiVersion {API_GROUP}/...) in {listed}"
        )
    return actors
