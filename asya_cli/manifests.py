"""Reading AsyncActor (and AsyaBinding) manifests for local runs (`asya dev`).

The same YAML files a user applies to a cluster. Locally only the fields that change how a
handler runs matter; `image`, `scaling` and pod settings are ignored (and said so in docs).
An AsyaBinding whose spec.endpoint names a server runs as a bridge actor: its caller, pointed
at that URL, exactly as the operator's bridge Deployment would run it (docs/bindings.md).
`parse_actor` and `parse_binding` are pure; `load_actors` walks files and collects every
problem it finds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asya_cli import spec_problems
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
    # Where the handler is imported from: the manifest's directory (or --app-dir); None for
    # actors built in code, which run from the pipeline's working directory.
    app_dir: Path | None = None
    concurrency: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    actor_timeout: str | None = None
    resiliency: Mapping[str, Any] | None = None


def parse_actor(document: Mapping[str, Any], *, source: str) -> ActorManifest:
    """The actor a manifest describes, validated by the operator's own model: a field the
    cluster would refuse (a typo such as `concurency`, a concurrency of 0) is refused here
    with the message `asya render` gives."""
    metadata = document.get("metadata") or {}
    spec = document.get("spec")
    where = f"{source}: AsyncActor {metadata.get('name', '?')!r}"
    if not isinstance(spec, dict):
        raise ManifestError(f"{where} has no spec")
    pydantic, models = _operator_models(where)
    try:
        actor = models.AsyncActor.from_object(dict(document))
    except pydantic.ValidationError as exc:
        problems = spec_problems.describe(exc)
        raise ManifestError("\n".join(f"{where}: {p}" for p in problems)) from None
    name = actor.actor
    if not name:
        raise ManifestError(f"{where}: set metadata.name (or spec.actor)")
    try:
        names.check_actor_name(name)
    except names.InvalidName as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if name in names.RESERVED:
        raise ManifestError(f"{where}: {name!r} is reserved for Asya's crew actors")
    # As written, not as the model re-serialises it: the sidecar reads this JSON itself.
    resiliency = spec.get("resiliency")
    timeout = (resiliency or {}).get("actorTimeout")
    return ActorManifest(
        name=name,
        handler=actor.spec.handler,
        source=source,
        concurrency=actor.spec.concurrency,
        env=_env(spec.get("env"), where),
        actor_timeout=str(timeout) if timeout is not None else None,
        resiliency=resiliency,
    )


def _operator_models(where: str) -> tuple[Any, Any]:
    """pydantic and the operator's models, which come with the operator extra."""
    try:
        import pydantic

        from asya_operator import models
    except ImportError as exc:
        raise ManifestError(
            f"{where}: manifests are checked by the operator's own model, which needs its "
            f"dependencies: pip install 'asya[operator]' ({exc})"
        ) from None
    return pydantic, models


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
    bridge: dict[str, Any] = {
        "actor": binding.actor,
        "handler": handler,
        "concurrency": binding.spec.concurrency,
        "env": variables,
    }
    if spec.get("resiliency") is not None:
        bridge["resiliency"] = spec["resiliency"]
    return parse_actor({"metadata": {"name": binding.name}, "spec": bridge}, source=source)


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


# Directories a walk never enters: tools' and packages' trees, not the user's manifests.
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "site-packages"})


def manifest_files(paths: Iterable[str | Path], *, skip: Iterable[Path] = ()) -> list[Path]:
    """YAML files named, or found under the directories named. A walk leaves out hidden
    files and directories, virtualenvs and the directories in `skip` (the state directory:
    `asya dev .` must not read back what it wrote there); a file named explicitly is kept."""
    skipped = {path.resolve() for path in skip}
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(_walk(path, skipped))
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return files


def _walk(directory: Path, skipped: set[Path]) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name in SKIPPED_DIRS:
            continue
        if entry.is_dir():
            if entry.resolve() in skipped or (entry / "pyvenv.cfg").exists():
                continue
            found.extend(_walk(entry, skipped))
        elif entry.suffix in (".yaml", ".yml"):
            found.append(entry)
    return found


def load_actors(
    paths: Iterable[str | Path], *, app_dir: Path | None = None, skip: Iterable[Path] = ()
) -> list[ActorManifest]:
    """Every AsyncActor, and every AsyaBinding as its bridge actor, under `paths`; raises
    ManifestError listing all problems found. Each actor's handler is imported from its
    manifest's directory, or from `app_dir` when given."""
    paths = list(paths)
    actors: list[ActorManifest] = []
    problems: list[str] = []
    for path in manifest_files(paths, skip=skip):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {exc}")
            continue
        home = (app_dir or path.parent).resolve()
        for document in documents:
            try:
                if is_async_actor(document):
                    actor = parse_actor(document, source=str(path))
                elif is_binding(document):
                    actor = parse_binding(document, source=str(path))
                else:
                    continue
                actors.append(dataclasses.replace(actor, app_dir=home))
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
