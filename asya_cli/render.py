"""`asya render FILE...`: print the Kubernetes objects the operator makes of AsyncActors.

The same pure rendering the operator applies (asya_operator.render), run on manifests from
disk, so a spec can be reviewed, diffed or linted without a cluster. Every problem in every
manifest is reported at once; nothing is printed unless all of them render.

Exit codes: 0 printed; 2 a bad manifest, a bad operator configuration or a spec the operator
would refuse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from asya_cli import manifests

if TYPE_CHECKING:
    from pydantic import ValidationError

    from asya_operator.config import OperatorConfig
    from asya_operator.models import AsyncActor

EXIT_OK, EXIT_INVALID = 0, 2
STDIN = "-"

# Without --operator-config: one rabbitmq transport, so a first run prints something useful.
DEFAULT_CONFIG: dict[str, Any] = {
    "transports": {"rabbitmq": {"type": "rabbitmq", "url": "amqp://rabbitmq:5672/"}},
    "defaultTransport": "rabbitmq",
}


class RenderFailed(ValueError):
    """Manifests or configuration that cannot be rendered; the message lists every problem."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "render",
        help="print the Kubernetes objects the operator creates for AsyncActor manifests",
        description="Render AsyncActor manifests into the objects the operator applies "
        "(ConfigMap, Deployment, KEDA ScaledObject and TriggerAuthentication) and print "
        "them as multi-document YAML. See docs/rendering.md.",
        epilog="exit codes: 0 printed, 2 a bad manifest, operator configuration or spec",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="FILE",
        help="AsyncActor manifests: YAML files (several documents each), directories "
        "(every *.yaml/*.yml below), or - for standard input",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help="namespace of manifests that do not name one (default: default); a manifest "
        "that names another one is an error, as with kubectl",
    )
    parser.add_argument(
        "--operator-config",
        metavar="FILE",
        help="the operator's configuration (transports, sidecar image); default: one "
        "rabbitmq transport at amqp://rabbitmq:5672/",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        text = render_text(
            args.paths, namespace=args.namespace, config_path=args.operator_config, stdin=sys.stdin
        )
    except RenderFailed as exc:
        print(f"asya render: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.operator_config is None:
        print(
            "asya render: using the built-in operator configuration (one rabbitmq transport "
            "at amqp://rabbitmq:5672/); pass --operator-config for your own",
            file=sys.stderr,
        )
    sys.stdout.write(text)
    return EXIT_OK


def render_text(
    paths: Sequence[str], *, namespace: str | None, config_path: str | None, stdin: TextIO
) -> str:
    try:
        from asya_operator import config as operator_config
    except ImportError as exc:  # pydantic comes with the operator extra only
        raise RenderFailed(
            f"rendering needs the operator's dependencies: pip install 'asya[operator]' ({exc})"
        ) from None
    try:
        config = (
            operator_config.parse(DEFAULT_CONFIG)
            if config_path is None
            else operator_config.load(config_path)
        )
    except operator_config.OperatorConfigError as exc:
        where = config_path or "built-in configuration"
        raise RenderFailed(f"{where}: {exc}") from None
    documents = read_documents(paths, stdin)
    return dump(render_documents(documents, config, namespace=namespace))


def read_documents(paths: Sequence[str], stdin: TextIO) -> list[tuple[str, Any]]:
    """(source, document) for every YAML document under `paths`."""
    sources: list[tuple[str, str]] = []
    problems: list[str] = []
    files = [p for p in paths if p != STDIN]
    try:
        found = manifests.manifest_files(files)
    except manifests.ManifestError as exc:
        raise RenderFailed(str(exc)) from None
    if STDIN in paths:
        sources.append(("<stdin>", stdin.read()))
    for path in found:
        try:
            sources.append((str(path), Path(path).read_text()))
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc}")
    documents: list[tuple[str, Any]] = []
    for source, text in sources:
        try:
            documents += [(source, d) for d in yaml.safe_load_all(text)]
        except yaml.YAMLError as exc:
            problems.append(f"{source}: not valid YAML: {exc}")
    if problems:
        raise RenderFailed("\n".join(problems))
    return documents


def render_documents(
    documents: Iterable[tuple[str, Any]], config: OperatorConfig, *, namespace: str | None
) -> list[dict[str, Any]]:
    """Every object for every AsyncActor among `documents`; other kinds are skipped."""
    from pydantic import ValidationError

    from asya_operator.render import RenderError, render

    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    count = 0
    for source, document in documents:
        if not manifests.is_async_actor(document):
            continue
        count += 1
        metadata = document.get("metadata") or {}
        where = f"{source}: AsyncActor {metadata.get('name', '?')!r}"
        try:
            actor = _actor(document, namespace)
        except ValidationError as exc:
            problems += [f"{where}: {problem}" for problem in _validation_problems(exc)]
            continue
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        key = (actor.namespace, actor.name)
        if key in seen:
            problems.append(
                f"{where}: defined twice in namespace {actor.namespace!r} ({seen[key]})"
            )
            continue
        seen[key] = source
        try:
            objects += render(actor, config)
        except RenderError as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        raise RenderFailed("\n".join(problems))
    if count == 0:
        raise RenderFailed(
            f"no AsyncActor manifests (apiVersion {manifests.API_GROUP}/...) in the input"
        )
    return objects


def _actor(document: dict[str, Any], namespace: str | None) -> AsyncActor:
    from asya_operator.models import AsyncActor

    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise ValueError("metadata.name is required")
    own = metadata.get("namespace")
    if namespace and own and own != namespace:
        raise ValueError(f"metadata.namespace {own!r} does not match --namespace {namespace!r}")
    metadata = {**metadata, "namespace": own or namespace or "default"}
    return AsyncActor.from_object({**document, "metadata": metadata})


def _validation_problems(exc: ValidationError) -> list[str]:
    """Pydantic's errors as `spec.field.path: message (got value)`."""
    problems = []
    # from_object validates the spec on its own, so its locations start below `spec`.
    root = "spec" if exc.title == "AsyncActorSpec" else "metadata"
    for error in exc.errors():
        path = root
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        got = error.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
        problems.append(f"{path}: {error['msg']}{shown}")
    return problems


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (the runtime file), and no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(
        objects, Dumper=_Dumper, sort_keys=False, explicit_start=True, allow_unicode=True
    )
