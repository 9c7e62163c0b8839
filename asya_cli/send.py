"""`asya send ROUTE --payload JSON`: start an envelope on its way, and optionally wait for it.

Exit codes: 0 sent (or, with --wait, finished as succeeded); 1 finished as failed; 2 the wait
ran out, or the arguments are wrong; 3 the envelope could not be sent.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asya_transports as transports
from asya_cli import dev_plan
from asya_cli.state_dir import HELP as STATE_DIR_HELP
from asya_cli.state_dir import default as default_state_dir
from asya_shared import env, names, redrive
from asya_shared.durations import parse_duration
from asya_sidecar.envelope import Phase, encode, status, timestamp

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_WAIT_RAN_OUT, EXIT_NOT_SENT = 0, 1, 2, 3


class UsageError(ValueError):
    """Arguments that cannot make an envelope; exit code 2."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "send",
        help="send a new envelope along a route",
        description="Put a new envelope on the queue of the first actor of ROUTE. Prints its "
        "id, or with --wait the final envelope as one JSON line.",
        epilog="exit codes: 0 sent / succeeded, 1 failed, 2 wait ran out or bad arguments, "
        "3 could not send",
    )
    parser.add_argument("route", metavar="ROUTE", help="comma-separated actors, e.g. prep,infer")
    parser.add_argument(
        "--payload", required=True, help="JSON payload, @FILE to read it from a file, - for stdin"
    )
    parser.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="wait up to SECONDS for the final envelope and print it",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a header (repeatable)",
    )
    parser.add_argument("--id", help="envelope id (default: a new UUID)")
    parser.add_argument(
        "--timeout",
        type=timeout_arg,
        metavar="DURATION",
        help="deadline for the whole route (seconds, or 30s, 5m): an actor that "
        "receives it later fails it with reason Timeout instead of running",
    )
    add_transport_arguments(parser)
    parser.add_argument(
        "--results",
        metavar="URL",
        help="result store to wait on (default: file://STATE_DIR/results)",
    )
    parser.add_argument(
        "--sump",
        metavar="URL",
        help="x-sump's store, also watched by --wait: an envelope that never reaches x-sink "
        "ends there (default: file://STATE_DIR/sump)",
    )
    parser.set_defaults(func=run)


def add_transport_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transport",
        choices=transports.KINDS,
        default=os.environ.get(env.TRANSPORT, "local"),
        help="broker (default: $ASYA_TRANSPORT or local)",
    )
    parser.add_argument("--state-dir", default=default_state_dir(), help=STATE_DIR_HELP)
    parser.add_argument(
        "--namespace",
        default=os.environ.get(env.NAMESPACE, "default"),
        help="namespace part of queue names (default: $ASYA_NAMESPACE or default)",
    )


def timeout_arg(text: str) -> float:
    """A positive duration for --timeout (argparse type): `30s`, `5m`, or seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"--timeout {text!r} must be more than zero")
    return seconds


def parse_route(text: str) -> list[str]:
    route = [part.strip() for part in text.split(",")]
    if not route or not all(route):
        raise UsageError(f"ROUTE {text!r} must be actor names separated by commas, e.g. a,b")
    for actor in route:
        try:
            names.check_actor_name(actor)
        except names.InvalidName as exc:
            raise UsageError(str(exc)) from None
    return route


def parse_payload(text: str) -> Any:
    source = "--payload"
    if text == "-":
        text, source = sys.stdin.read(), "stdin"
    elif text.startswith("@"):
        path = Path(text[1:])
        try:
            text, source = path.read_text(), str(path)
        except OSError as exc:
            raise UsageError(f"cannot read payload file {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--header {item!r} must look like KEY=VALUE")
        headers[key] = value
    return headers


def build_envelope(
    route: Sequence[str],
    payload: Any,
    *,
    envelope_id: str,
    headers: Mapping[str, Any],
    traceparent: str,
    now: datetime.datetime,
    timeout: float | None = None,
) -> dict[str, Any]:
    """A fresh envelope at the start of `route` (pure)."""
    fresh = status(None, phase=Phase.PENDING, actor=route[0], now=now)
    if timeout is not None:
        fresh["deadline_at"] = timestamp(now + datetime.timedelta(seconds=timeout))
    return {
        "id": envelope_id,
        "parent_id": None,
        "route": {"prev": [], "curr": route[0], "next": list(route[1:])},
        "headers": {"traceparent": traceparent, **headers},
        "status": fresh,
        "payload": payload,
    }


def run(args: argparse.Namespace) -> int:
    try:
        route = parse_route(args.route)
        payload = parse_payload(args.payload)
        headers = parse_headers(args.header)
    except UsageError as exc:
        print(f"asya send: {exc}", file=sys.stderr)
        return EXIT_WAIT_RAN_OUT
    state_dir = Path(args.state_dir).resolve()
    envelope = build_envelope(
        route,
        payload,
        envelope_id=args.id or str(uuid.uuid4()),
        headers=headers,
        traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        now=datetime.datetime.now(datetime.UTC),
        timeout=args.timeout,
    )
    environ = {**os.environ, env.STATE_DIR: str(state_dir)}
    try:
        queue = names.check_queue_name(names.queue_name(args.namespace, route[0]), args.transport)
        asyncio.run(_send(args.transport, environ, queue, envelope))
    except (names.InvalidName, transports.TransportError) as exc:
        hint = ""
        if isinstance(exc, transports.QueueNotFound):
            hint = f" (is `asya dev` running with actor {route[0]!r} on this transport?)"
        print(f"asya send: could not send: {exc}{hint}", file=sys.stderr)
        return EXIT_NOT_SENT
    if args.wait is None:
        print(envelope["id"])
        return EXIT_SUCCEEDED
    store_url = args.results or dev_plan.results_url(state_dir)
    sump_url = args.sump or dev_plan.sump_url(state_dir)
    result = asyncio.run(
        wait_for_result(store_url, envelope["id"], timeout=args.wait, sump_url=sump_url)
    )
    if result is None:
        print(
            f"asya send: no result for {envelope['id']} within {args.wait:g}s "
            f"(looked in {store_url} and {sump_url})",
            file=sys.stderr,
        )
        return EXIT_WAIT_RAN_OUT
    print(json.dumps(result, ensure_ascii=False))
    status = result.get("status") if isinstance(result.get("status"), dict) else {}
    if status.get("phase") == Phase.SUCCEEDED:
        return EXIT_SUCCEEDED
    print(f"asya send: {envelope['id']} {failure_summary(status)}", file=sys.stderr)
    return EXIT_FAILED


def failure_summary(status: Mapping[str, Any]) -> str:
    """`failed at classify: HandlerError (KeyError: 'text')`, from a final status."""
    text = f"{status.get('phase') or 'failed'}"
    if status.get("actor"):
        text += f" at {status['actor']}"
    if status.get("reason"):
        text += f": {status['reason']}"
    error = status.get("error")
    if isinstance(error, dict) and error.get("type"):
        text += f" ({redrive.error_line(error)})"
    return text


async def _send(kind: str, environ: Mapping[str, str], queue: str, fields: Any) -> None:
    async with transports.create(kind, environ) as transport:
        await transport.send(queue, encode(fields))


async def wait_for_result(
    store_url: str, envelope_id: str, *, timeout: float, sump_url: str | None = None
) -> Any:
    """The stored final envelope, or None if it did not appear within `timeout` seconds.

    With `sump_url`, a record x-sump holds ends the wait too: an envelope that never reached
    x-sink (an unknown next actor, a result that could not be used) is stored only there.
    x-sink's record wins when both exist, as it is the envelope's own end.
    """
    from asya_shared import records, stores

    key = records.key(envelope_id)
    store = stores.open_store(store_url)
    sump = None if sump_url is None else stores.open_store(sump_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            data = await store.get(key)
            if data is None and sump is not None and await sump.get(key) is not None:
                # x-sink may have stored it and passed it on since we looked.
                data = await store.get(key) or await sump.get(key)
            if data is not None:
                return json.loads(data)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.1)
    finally:
        await store.close()
        if sump is not None:
            await sump.close()
