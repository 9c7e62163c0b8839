"""The task commands, clients of a gateway's public API: `asya submit`, `get`, `ls`, `watch`,
`cancel`, `resume`.

Which gateway: --gateway URL, else $ASYA_GATEWAY_URL, else the URL `asya dev` wrote into
its state directory; the API key: --api-key, else $ASYA_API_KEY. Output: on a terminal a
task reads as aligned fields and a list as a table; otherwise (or with --json) as one JSON
line, for scripts.

Exit codes of `submit`: 0 submitted (with --wait: succeeded); 1 failed or canceled; 2 the
wait ran out, or the arguments are wrong (also when the gateway refuses them: 400, 404 for an
unknown flow, 413); 3 could not submit (no gateway, unreachable, 401, an actor with no queue,
5xx such as 503 when the broker is down). `watch` exits as
`submit --wait` does, by the task's final status. `get`, `ls` and `cancel` exit 0 on
success, 1 when the gateway answers that the task is unknown (404) or cannot be canceled
(409), 2 on bad arguments, 3 when the gateway cannot be reached or refuses the caller.
`resume` exits 0 when the task runs again, 1 when the gateway refuses the resume (404
unknown task, 409 not paused, 400 an input that does not fit the pause: its message names
the field), 2 when --input is not a JSON object (or its file cannot be read), 3 as above.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from asya_cli import sse
from asya_cli.gateway_client import (
    TERMINAL,
    Client,
    NoGateway,
    Refused,
    Target,
    Unreachable,
    resolve,
)
from asya_cli.send import UsageError, parse_headers, parse_payload, parse_route, timeout_arg
from asya_cli.state_dir import HELP as STATE_DIR_HELP
from asya_cli.state_dir import default as default_state_dir
from asya_shared import env

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_SUBMITTED",
    "EXIT_SUCCEEDED",
    "EXIT_USAGE",
    "add_parsers",
    "follow",
    "render_event",
    "render_table",
    "render_task",
]

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_SUBMITTED = 0, 1, 2, 3
EXIT_WAIT_RAN_OUT = EXIT_USAGE  # the issue gives both the same code
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by SIGINT
# Answers that mean "the request as given cannot be accepted": fix the arguments (400 bad
# request, 404 unknown flow, 409 an id another caller holds, 413 too large).
USAGE_STATUSES = frozenset({400, 404, 409, 413, 422})
POLL_INTERVAL_S = 0.25
# Reconnects of an event stream that brought nothing new before falling back to polling.
MAX_IDLE_RECONNECTS = 3
STATUSES = ("pending", "running", "paused", "succeeded", "failed", "canceled")
MAX_LIMIT = 500
DEFAULT_LIMIT = 50

Follower = Callable[[sse.Event], None]


def add_parsers(commands: Any) -> None:
    submit = commands.add_parser(
        "submit",
        help="submit a task to the gateway (a route or a named flow)",
        description="Submit a task through the gateway: along ROUTE (comma-separated actors) "
        "or the named flow --flow. Prints the task id, or with --wait the final task as one "
        "JSON line.",
        epilog="exit codes: 0 submitted / succeeded, 1 failed or canceled, 2 wait ran out or "
        "bad arguments, 3 could not submit",
    )
    submit.add_argument(
        "route", metavar="ROUTE", nargs="?", help="comma-separated actors, e.g. prep,infer"
    )
    submit.add_argument("--flow", metavar="NAME", help="a named flow instead of a ROUTE")
    submit.add_argument(
        "--payload", required=True, help="JSON payload, @FILE to read it from a file, - for stdin"
    )
    submit.add_argument(
        "--timeout",
        type=timeout_arg,
        metavar="D",
        help="deadline for the whole task (seconds, or 30s, 5m)",
    )
    submit.add_argument("--id", help="task id, also an idempotency key (default: a new one)")
    submit.add_argument(
        "--header", action="append", default=[], metavar="KEY=VALUE", help="add a header"
    )
    submit.add_argument(
        "--wait",
        type=_seconds,
        metavar="SECONDS",
        help="wait up to SECONDS for the task to finish and print it",
    )
    add_gateway_arguments(submit)
    submit.set_defaults(func=run_submit)

    get = commands.add_parser(
        "get",
        help="show a task",
        description="Show a task: its status, route, progress, and result or error.",
    )
    get.add_argument("id", metavar="ID")
    get.add_argument("--json", action="store_true", help="print one JSON line")
    add_gateway_arguments(get)
    get.set_defaults(func=run_get)

    listing = commands.add_parser(
        "tasks",
        help="list tasks, newest first",
        description="List the gateway's tasks, newest first (also `asya ls` with --status, "
        "--limit or --cursor).",
    )
    listing.add_argument("--json", action="store_true", help="print the page as one JSON line")
    add_listing_arguments(listing)
    add_gateway_arguments(listing)
    listing.set_defaults(func=run_ls)

    watch = commands.add_parser(
        "watch",
        help="follow a task live until it ends",
        description="Print a task's status changes and its handlers' FLY events as they "
        "happen, until the task ends.",
        epilog="exit codes: 0 succeeded, 1 failed or canceled (or unknown), 3 gateway unreachable",
    )
    watch.add_argument("id", metavar="ID")
    watch.add_argument(
        "--json", action="store_true", help='one JSON line per event: {"event", "id", "data"}'
    )
    add_gateway_arguments(watch)
    watch.set_defaults(func=run_watch)

    cancel = commands.add_parser(
        "cancel",
        help="cancel a task",
        description="Cancel a task: its next hop finishes it as canceled instead of calling "
        "a handler. Canceling twice is fine; a task that already ended cannot be canceled.",
    )
    cancel.add_argument("id", metavar="ID")
    cancel.add_argument("--json", action="store_true", help="print one JSON line")
    add_gateway_arguments(cancel)
    cancel.set_defaults(func=run_cancel)

    resume = commands.add_parser(
        "resume",
        help="resume a paused task with a person's input",
        description="Resume a task paused at x-pause: the input (a JSON object of the "
        "pause's fields, as `asya get` shows them) is merged into the payload and the task "
        "goes on with the next actor of its route.",
        epilog="exit codes: 0 resumed, 1 refused (unknown task, not paused, input that does "
        "not fit), 2 bad --input, 3 gateway unreachable",
    )
    resume.add_argument("id", metavar="ID")
    resume.add_argument(
        "--input",
        required=True,
        metavar="JSON|@FILE",
        help="the input, a JSON object like '{\"approved\": true}', or @FILE to read it "
        "from a file (@- for stdin)",
    )
    resume.add_argument("--json", action="store_true", help="print one JSON line")
    add_gateway_arguments(resume)
    resume.set_defaults(func=run_resume)


def add_listing_arguments(parser: argparse.ArgumentParser) -> None:
    """The task listing's filters (`asya tasks`, and `asya ls` given any of them)."""
    parser.add_argument("--status", choices=STATUSES, help="only tasks with this status")
    parser.add_argument(
        "--limit",
        type=_limit,
        metavar="N",
        help=f"at most N tasks (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})",
    )
    parser.add_argument("--cursor", help="continue after a listing (its next_cursor)")


def lists_tasks(args: argparse.Namespace) -> bool:
    """Whether `asya ls` was given a task listing's filter (its meaning before 0.18)."""
    return args.status is not None or args.limit is not None or args.cursor is not None


def add_gateway_arguments(parser: argparse.ArgumentParser, *, state_dir: bool = True) -> None:
    """--gateway and --api-key (and --state-dir, where `asya dev` wrote the gateway's URL)."""
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help=f"the gateway's public URL (default: ${env.GATEWAY_URL}, else the one `asya dev` "
        "wrote into its state directory)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(env.API_KEY) or None,
        metavar="KEY",
        help=f"API key, sent as a bearer token (default: ${env.API_KEY})",
    )
    if state_dir:
        parser.add_argument("--state-dir", default=default_state_dir(), help=STATE_DIR_HELP)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero seconds")
    return seconds


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--limit {text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"--limit {value} must be between 1 and {MAX_LIMIT}")
    return value


# --- the commands -------------------------------------------------------------------------


def run_submit(args: argparse.Namespace) -> int:
    try:
        body = _submit_body(args)
    except UsageError as exc:
        return _fail("submit", str(exc), EXIT_USAGE)
    return _run("submit", args, lambda client: _submit(client, args, body))


def _submit_body(args: argparse.Namespace) -> dict[str, Any]:
    if (args.route is None) == (args.flow is None):
        raise UsageError("give either ROUTE (e.g. a,b) or --flow NAME, not both or neither")
    body: dict[str, Any] = {}
    if args.route is not None:
        body["route"] = parse_route(args.route)
    else:
        body["flow"] = args.flow
    body["payload"] = parse_payload(args.payload)
    headers = parse_headers(args.header)
    if headers:
        body["headers"] = headers
    if args.timeout is not None:
        body["timeout"] = args.timeout
    if args.id:
        body["id"] = args.id
    return body


async def _submit(client: Client, args: argparse.Namespace, body: dict[str, Any]) -> int:
    try:
        task, _ = await client.submit(body)
    except Refused as exc:
        return _fail("submit", f"not submitted: {exc}", _submit_exit_code(exc))
    except Unreachable as exc:
        return _fail("submit", f"not submitted: {exc}", EXIT_NOT_SUBMITTED)
    if args.wait is None:
        print(task["id"])
        return EXIT_SUCCEEDED
    last_seen = [str(task.get("status"))]

    def remember(event: sse.Event) -> None:
        data = _data(event)
        if event.event != "fly" and isinstance(data, dict) and "status" in data:
            last_seen.append(str(data["status"]))

    try:
        async with asyncio.timeout(args.wait):
            await follow(client, task["id"], on_event=remember, tolerate_outage=True)
            final = await client.get(task["id"])
    except TimeoutError:
        return _fail(
            "submit",
            f"task {task['id']} did not finish within {args.wait:g}s (last seen "
            f"{last_seen[-1]}); follow it with `asya watch {task['id']}`",
            EXIT_WAIT_RAN_OUT,
        )
    print(json.dumps(final, ensure_ascii=False))
    return EXIT_SUCCEEDED if final.get("status") == "succeeded" else EXIT_FAILED


def _submit_exit_code(refused: Refused) -> int:
    """2 when the arguments must change; 3 when the gateway could not take a good request:
    auth, the broker, or an actor with no queue (as `asya send` exits for it)."""
    if refused.code == "unknown_actor":
        return EXIT_NOT_SUBMITTED
    return EXIT_USAGE if refused.status in USAGE_STATUSES else EXIT_NOT_SUBMITTED


def run_get(args: argparse.Namespace) -> int:
    async def get(client: Client) -> int:
        _print_task(await client.get(args.id), as_json=args.json)
        return EXIT_SUCCEEDED

    return _run("get", args, get)


def run_ls(args: argparse.Namespace) -> int:
    async def ls(client: Client) -> int:
        limit = DEFAULT_LIMIT if args.limit is None else args.limit
        page = await client.list_tasks(status=args.status, limit=limit, cursor=args.cursor)
        if args.json or not _tty(sys.stdout):
            print(json.dumps(page, ensure_ascii=False))
        else:
            print(render_table(page.get("tasks", [])))
            if page.get("next_cursor"):
                print(f"more: asya tasks --cursor {page['next_cursor']}")
        return EXIT_SUCCEEDED

    return _run("tasks", args, ls)


def run_watch(args: argparse.Namespace) -> int:
    def show(event: sse.Event) -> None:
        if args.json:
            line = json.dumps({"event": event.event, "id": event.id, "data": _data(event)})
        else:
            line = render_event(event)
        print(line, flush=True)

    async def watch(client: Client) -> int:
        status = await follow(client, args.id, on_event=show)
        return EXIT_SUCCEEDED if status == "succeeded" else EXIT_FAILED

    return _run("watch", args, watch)


def run_cancel(args: argparse.Namespace) -> int:
    async def cancel(client: Client) -> int:
        _print_task(await client.cancel(args.id), as_json=args.json)
        return EXIT_SUCCEEDED

    return _run("cancel", args, cancel)


def run_resume(args: argparse.Namespace) -> int:
    try:
        input = parse_input(args.input)
    except UsageError as exc:
        return _fail("resume", str(exc), EXIT_USAGE)

    async def resume(client: Client) -> int:
        _print_task(await client.resume(args.id, input), as_json=args.json)
        return EXIT_SUCCEEDED

    # A refused input is the task's answer to this input, not a misuse of the command.
    return _run("resume", args, resume, refused=frozenset({400, 404, 409}))


def parse_input(text: str) -> dict[str, Any]:
    """`--input`: a JSON object, or @FILE holding one (@- reads stdin); UsageError saying
    what is wrong otherwise."""
    source = "--input"
    if text.startswith("@"):
        path = text[1:]
        source = f"--input file {path!r}" if path != "-" else "--input from stdin"
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {source}: {exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"{source} is not JSON ({exc}); give an object like '{{\"approved\": true}}' or @FILE"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"{source} must be a JSON object of the pause's fields, like "
            f"'{{\"approved\": true}}', not {type(value).__name__}"
        )
    return value


def _run(
    command: str,
    args: argparse.Namespace,
    body: Callable[[Client], Awaitable[int]],
    *,
    refused: frozenset[int] = frozenset({404, 409}),
) -> int:
    """Find the gateway, run `body` with a client, and turn the client's errors into one
    line on stderr and the command's exit code (EXIT_FAILED for the `refused` statuses)."""
    try:
        target = resolve(args.gateway, os.environ, Path(args.state_dir))
    except NoGateway as exc:
        return _fail(command, str(exc), EXIT_NOT_SUBMITTED)

    async def main(target: Target) -> int:
        async with Client(target, api_key=args.api_key) as client:
            return await body(client)

    try:
        return asyncio.run(main(target))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # Ctrl-C while waiting or watching: the task goes on
    except Unreachable as exc:
        return _fail(command, str(exc), EXIT_NOT_SUBMITTED)
    except Refused as exc:
        if exc.status in refused:
            return _fail(command, str(exc), EXIT_FAILED)
        code = EXIT_USAGE if exc.status in USAGE_STATUSES else EXIT_NOT_SUBMITTED
        return _fail(command, str(exc), code)


def _fail(command: str, message: str, code: int) -> int:
    print(f"asya {command}: {message}", file=sys.stderr)
    return code


# --- following a task ---------------------------------------------------------------------


async def follow(
    client: Client,
    task_id: str,
    *,
    on_event: Follower | None = None,
    tolerate_outage: bool = False,
) -> str:
    """Follow the task until it ends; return its final status.

    Reads the event stream, reconnecting with Last-Event-ID when it is cut short; after
    MAX_IDLE_RECONNECTS reconnects in a row that brought nothing, polls GET instead. With
    `tolerate_outage`, an unreachable gateway is retried by polling (the caller bounds the
    time); without it, Unreachable propagates. Refused (404: no such task) propagates."""
    last_id: str | None = None
    idle = 0
    while idle < MAX_IDLE_RECONNECTS:
        seen = False
        try:
            # Closed as soon as the task ends, not when the generator is collected: the
            # connection goes back to the pool for the GET that follows.
            async with contextlib.aclosing(client.events(task_id, last_event_id=last_id)) as events:
                async for event in events:
                    seen = True
                    last_id = event.id if event.id is not None else last_id
                    if on_event is not None:
                        on_event(event)
                    status = _terminal_status(event)
                    if status is not None:
                        return status
        except Unreachable:
            if not tolerate_outage:
                raise
            break
        idle = 0 if seen else idle + 1
    return await _poll(client, task_id, on_event=on_event, tolerate_outage=tolerate_outage)


async def _poll(
    client: Client, task_id: str, *, on_event: Follower | None, tolerate_outage: bool
) -> str:
    shown: tuple[Any, ...] | None = None
    while True:
        try:
            task = await client.get(task_id)
        except Unreachable:
            if not tolerate_outage:
                raise
        else:
            status = str(task.get("status"))
            state = (status, task.get("actor"), task.get("progress"))
            if on_event is not None and state != shown:
                data = {"status": status, "actor": task.get("actor"), "progress": state[2]}
                on_event(sse.Event(event="status", data=json.dumps(data), id=None))
            shown = state
            if status in TERMINAL:
                return status
        await asyncio.sleep(POLL_INTERVAL_S)


def _data(event: sse.Event) -> Any:
    try:
        return json.loads(event.data)
    except ValueError:
        return event.data


def _terminal_status(event: sse.Event) -> str | None:
    """The final status an event announces, if it does (a status event, or the task's
    current state as the stream's first event)."""
    if event.event == "fly":
        return None
    data = _data(event)
    status = data.get("status") if isinstance(data, dict) else None
    return status if status in TERMINAL else None


# --- output -------------------------------------------------------------------------------


def _tty(stream: TextIO) -> bool:
    return stream.isatty()


def _print_task(task: dict[str, Any], *, as_json: bool) -> None:
    if as_json or not _tty(sys.stdout):
        print(json.dumps(task, ensure_ascii=False))
    else:
        print(render_task(task))


def render_task(task: dict[str, Any]) -> str:
    """A task as aligned `field  value` lines, for people."""
    rows: list[tuple[str, str]] = [
        ("id", str(task.get("id"))),
        ("status", str(task.get("status"))),
    ]
    route = task.get("route") or {}
    if route:
        rows.append(("route", _route_text(route)))
    rows.append(("progress", _percent(task.get("progress"))))
    for name in ("reason", "created_at", "updated_at", "deadline_at"):
        if task.get(name) is not None:
            rows.append((name, str(task[name])))
    join = task.get("join")
    if isinstance(join, dict):
        rows.append(("joined", f"{join.get('done')}/{join.get('total')} parts"))
    for name in ("pause", "error", "result"):
        if task.get(name) is not None:
            rows.append((name, json.dumps(task[name], ensure_ascii=False, indent=2)))
    width = max(len(name) for name, _ in rows) + 2
    lines = []
    for name, value in rows:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{name:<{width}}{first}")
        lines.extend(f"{'':<{width}}{line}" for line in rest)
    return "\n".join(lines)


def render_table(tasks: Sequence[dict[str, Any]]) -> str:
    """Tasks as a table with a header row, for people."""
    header = ("ID", "STATUS", "ACTOR", "PROGRESS", "CREATED")
    rows = [header] + [
        (
            str(task.get("id")),
            str(task.get("status")),
            str(task.get("actor") or "-"),
            _percent(task.get("progress")),
            str(task.get("created_at")),
        )
        for task in tasks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def render_event(event: sse.Event) -> str:
    """One event of `asya watch` as a line: `status running  actor=b  progress=50%`, or
    `fly {...}` with the handler's event as it yielded it."""
    data = _data(event)
    if event.event != "fly" and isinstance(data, dict) and "status" in data:
        parts = [f"{event.event} {data['status']}"]
        if data.get("actor"):
            parts.append(f"actor={data['actor']}")
        if data.get("progress") is not None:
            parts.append(f"progress={_percent(data['progress'])}")
        if data.get("reason"):
            parts.append(f"reason={data['reason']}")
        return "  ".join(parts)
    return f"{event.event} {json.dumps(data, ensure_ascii=False)}"


def _route_text(route: dict[str, Any]) -> str:
    """`a > [b] > c`: the actors done, the current one in brackets, the ones to come."""
    parts = [*route.get("prev", [])]
    if route.get("curr"):
        parts.append(f"[{route['curr']}]")
    parts.extend(route.get("next", []))
    return " > ".join(parts)


def _percent(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value * 100:.0f}%"
