"""`asya render FILE...`: print the Kubernetes objects the operator makes of AsyncActors
and AsyaBindings.

The same pure rendering the operator applies (asya_operator.render, binding_render), run on
manifests from disk, so a spec can be reviewed, diffed or linted without a cluster. Every
problem in every manifest is reported at once; nothing is printed unless all of them render.

An AsyaBinding needs its workload: `--workload FILE` gives the Deployment (or custom
resource) it binds, plus any Services, HorizontalPodAutoscalers and ScaledObjects the operator
would look at. Inject mode prints the whole workload with its patched pod template (for
`kubectl diff -f -`), bridge mode the bridge's objects.

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

from asya_cli import manifests, spec_problems

if TYPE_CHECKING:
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
        help="print the Kubernetes objects the operator creates for AsyncActor and "
        "AsyaBinding manifests",
        description="Render AsyncActor and AsyaBinding manifests into the objects the "
        "operator applies (ConfigMap, Deployment, KEDA ScaledObject and "
        "TriggerAuthentication; for a binding in inject mode, the patched workload) and print "
        "them as multi-document YAML. See docs/rendering.md and docs/bindings.md.",
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
        "--workload",
        metavar="FILE",
        action="append",
        default=[],
        help="for AsyaBindings: manifests of the bound workload and of the Services, "
        "HorizontalPodAutoscalers and ScaledObjects beside it (repeatable)",
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
            args.paths,
            namespace=args.namespace,
            config_path=args.operator_config,
            stdin=sys.stdin,
            workloads=args.workload,
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
    paths: Sequence[str],
    *,
    namespace: str | None,
    config_path: str | None,
    stdin: TextIO,
    workloads: Sequence[str] = (),
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
    beside = [d for _, d in read_documents(workloads, stdin)] if workloads else []
    return dump(render_documents(documents, config, namespace=namespace, workloads=beside))


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
    documents: Iterable[tuple[str, Any]],
    config: OperatorConfig,
    *,
    namespace: str | None,
    workloads: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """Every object for every AsyncActor and AsyaBinding among `documents`; other kinds are
    skipped. `workloads` are the objects bindings are rendered against."""
    from pydantic import ValidationError

    from asya_operator.render import RenderError, render

    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    count = 0
    for source, document in documents:
        if manifests.is_binding(document):
            count += 1
            try:
                objects += _binding(document, config, namespace, workloads)
            except ValidationError as exc:
                name = (document.get("metadata") or {}).get("name", "?")
                where = f"{source}: AsyaBinding {name!r}"
                problems += [f"{where}: {problem}" for problem in spec_problems.describe(exc)]
            except ValueError as exc:
                name = (document.get("metadata") or {}).get("name", "?")
                problems.append(f"{source}: AsyaBinding {name!r}: {exc}")
            continue
        if not manifests.is_async_actor(document):
            continue
        count += 1
        metadata = document.get("metadata") or {}
        where = f"{source}: AsyncActor {metadata.get('name', '?')!r}"
        try:
            actor = _actor(document, namespace)
        except ValidationError as exc:
            problems += [f"{where}: {problem}" for problem in spec_problems.describe(exc)]
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
            f"no AsyncActor manifests (nor AsyaBindings; apiVersion {manifests.API_GROUP}/...) "
            "in the input"
        )
    return objects


def _binding(
    document: dict[str, Any], config: OperatorConfig, namespace: str | None, beside: Sequence[Any]
) -> list[dict[str, Any]]:
    """The objects of one binding, against the workload among `beside` it names (raises
    ValueError, RenderError included, or pydantic's ValidationError)."""
    from asya_operator import binding_render
    from asya_operator.binding_models import AsyaBinding

    binding = AsyaBinding.from_object({**document, "metadata": _metadata(document, namespace)})
    ref = binding.spec.workload_ref
    objects = [d for d in beside if isinstance(d, dict)]

    def of_kind(kind: str) -> list[dict[str, Any]]:
        return [d for d in objects if d.get("kind") == kind]

    workload = next(
        (
            d
            for d in objects
            if d.get("kind") == ref.kind
            and d.get("apiVersion") == ref.api_version
            and (d.get("metadata") or {}).get("name") == ref.name
        ),
        None,
    )
    if workload is None and objects:
        given = ", ".join(
            f"{d.get('kind')} {(d.get('metadata') or {}).get('name')}" for d in objects
        )
        raise ValueError(
            f"spec.workloadRef names {ref.kind} {ref.name} ({ref.api_version}), which is not "
            f"among the --workload manifests ({given})"
        )
    return binding_render.offline(
        binding,
        workload=workload,
        services=of_kind("Service"),
        autoscalers=of_kind("HorizontalPodAutoscaler"),
        scaled_objects=of_kind("ScaledObject"),
        config=config,
    )


def _metadata(document: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise ValueError("metadata.name is required")
    own = metadata.get("namespace")
    if namespace and own and own != namespace:
        raise ValueError(f"metadata.namespace {own!r} does not match --namespace {namespace!r}")
    return {**metadata, "namespace": own or namespace or "default"}


def _actor(document: dict[str, Any], namespace: str | None) -> AsyncActor:
    from asya_operator.models import AsyncActor

    return AsyncActor.from_object({**document, "metadata": _metadata(document, namespace)})


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
