"""`asya operator`: run the AsyncActor operator (kopf) with Asya's handlers.

The configuration file is read and validated here first, so a bad file stops the command
with its problems listed (exit 2) before kopf connects anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

# Next to kopf's liveness port (8080 in the Helm chart), as the crew's metrics are.
METRICS_PORT = 8081


def port_number(text: str) -> int:
    """An argparse type: a TCP port, or 0."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0-65535")
    return port


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "operator",
        help="run the AsyncActor operator against the current Kubernetes cluster",
        description="Watch AsyncActors and keep their queues, Deployments, KEDA objects and "
        "status in line with them. Logs in with the pod's service account, else the current "
        "kubeconfig context. See docs/operator.md.",
        epilog="exit codes: 0 stopped, 1 failed while running, 2 bad arguments or configuration",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="operator configuration (YAML); default: the file named by $ASYA_OPERATOR_CONFIG",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable); default: the configuration's "
        "`namespaces`, or all when it lists none",
    )
    where.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_number,
        default=METRICS_PORT,
        metavar="PORT",
        help=f"serve Prometheus metrics on /metrics at this port (default {METRICS_PORT}; "
        "0 turns them off)",
    )
    parser.add_argument(
        "--metrics-host",
        default="0.0.0.0",  # Prometheus scrapes from outside the pod
        metavar="HOST",
        help="address the metrics endpoint listens on (default 0.0.0.0)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.set_defaults(func=run)


def scope(
    requested: list[str], all_namespaces: bool, configured: list[str]
) -> tuple[bool, list[str]]:
    """(cluster-wide?, namespaces): the command line wins over the configuration file."""
    if all_namespaces:
        return True, []
    if requested:
        return False, list(requested)
    if configured:
        return False, list(configured)
    return True, []


def run(args: argparse.Namespace) -> int:
    # Imported here, like every subcommand's dependencies, so `asya --help` stays quick.
    from asya_operator.config import CONFIG_ENV, OperatorConfigError, load

    path = args.config or os.environ.get(CONFIG_ENV, "").strip()
    if not path:
        print(
            f"asya operator: no configuration: pass --config FILE or set {CONFIG_ENV}",
            file=sys.stderr,
        )
        return 2
    try:
        config = load(path)
    except OperatorConfigError as exc:
        print(f"asya operator: {exc}", file=sys.stderr)
        return 2
    # The startup handler reads the file again from here, as it does under `kopf run`.
    os.environ[CONFIG_ENV] = str(path)

    clusterwide, namespaces = scope(args.namespaces, args.all_namespaces, config.namespaces)

    import kopf

    from asya_operator import handlers  # importing registers the handlers with kopf

    # kopf retries a failing login until it is stopped; say what is missing at once instead.
    try:
        found = handlers.credentials(kopf.OperatorSettings())
    except kopf.PermanentError as exc:
        print(f"asya operator: {exc}", file=sys.stderr)
        return 2
    if found is None:
        print(
            "asya operator: no Kubernetes credentials: not in a pod with a service account, "
            "and no kubeconfig ($KUBECONFIG or ~/.kube/config)",
            file=sys.stderr,
        )
        return 2

    from asya_operator import metrics

    # Before kopf, so a taken port stops the command at once rather than after login.
    try:
        served = metrics.serve(args.metrics_host, args.metrics_port)
    except OSError as exc:
        print(
            f"asya operator: cannot serve metrics on {args.metrics_host}:{args.metrics_port} "
            f"({exc}); free the port or choose another with --metrics-port (0 turns metrics off)",
            file=sys.stderr,
        )
        return 2

    kopf.configure(verbose=bool(args.verbose))
    try:
        kopf.run(
            clusterwide=clusterwide,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
            standalone=True,
        )
    except Exception as exc:  # kopf's startup failures are not a public exception type
        cause = exc.__cause__ or exc
        print(f"asya operator: {cause}", file=sys.stderr)
        return 1
    finally:
        if served is not None:
            server, _thread = served
            server.shutdown()
            server.server_close()
    return 0
