"""`asya sump ls|show` and `asya redrive`: look at what x-sump kept, and send it again.

The decisions (what a record shows, what a redrive sends, what is refused) are in
asya_shared.redrive, the reading and sending in asya_sump.redriving (which the gateway's sump
page shares); this module parses arguments, prints, and picks the exit code.

A redrive removes a record from the sump only once the transport confirmed the send: a
failed send leaves it there, to be redriven again.

Exit codes: 0 done (every selected record redriven); 1 a record is missing, was refused or
could not be sent (or removed); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

import asya_transports as transports
from asya_cli import dev_plan, send
from asya_shared import env, names, redrive, stores
from asya_shared.redrive import Filters, Summary
from asya_sump import redriving

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Without a terminal the table is plain text of a fixed width, so scripts and tests see the
# same lines whatever the environment's COLUMNS says.
PLAIN_WIDTH = 200


class UsageError(ValueError):
    """Arguments that select nothing or cannot be read; exit code 2."""


def add_parsers(commands: Any) -> None:
    sump = commands.add_parser(
        "sump",
        help="list and show what x-sump kept (failed and unusable envelopes)",
        description="Read the sump store: the records x-sump kept of everything that failed "
        "or could not be processed. See docs/crew.md.",
    )
    actions = sump.add_subparsers(dest="sump_command", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "ls",
        help="list sump records, newest first",
        description="List sump records, newest failure first: a table on a terminal, plain "
        "text otherwise, a JSON array with --json.",
    )
    _add_filters(ls)
    _add_common(ls)
    ls.set_defaults(func=run_ls)
    show = actions.add_parser(
        "show",
        help="print one sump record",
        description="Print the whole record of one envelope: pretty JSON, compact with --json.",
        epilog="exit codes: 0 shown, 1 no such record",
    )
    show.add_argument("id", metavar="ID", help="the envelope's id")
    _add_common(show)
    show.set_defaults(func=run_show)

    redrive = commands.add_parser(
        "redrive",
        help="send sump records back to the actor that failed them",
        description="Send each selected sump record back to the actor that failed it, with the "
        "steps it had not run, a fresh status (attempt 1, no deadline) and the header "
        "redriven-from; the record leaves the sump once the broker confirmed the send. Select "
        "records by ID, or by --actor/--reason/--since.",
        epilog="exit codes: 0 all redriven, 1 some missing, refused or not sent, 2 bad arguments",
    )
    redrive.add_argument("ids", metavar="ID", nargs="*", help="ids of sump records")
    _add_filters(redrive)
    redrive.add_argument(
        "--dry-run", action="store_true", help="say what would be sent; send and remove nothing"
    )
    _add_common(redrive)
    redrive.set_defaults(func=run_redrive)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actor", help="only records that failed at this actor")
    parser.add_argument("--reason", help="only records with this reason, e.g. RuntimeError")
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only failures since WHEN: a duration ago (30m, 2h, 1d) or an RFC 3339 time",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parser.add_argument("--sump", metavar="URL", help="sump store (default: file://STATE_DIR/sump)")
    send.add_transport_arguments(parser)


# ----------------------------------------------------------------------------------- ls, show


def run_ls(args: argparse.Namespace) -> int:
    try:
        filters = _filters(args)
    except UsageError as exc:
        return _usage("asya sump ls", exc)
    try:
        rows = asyncio.run(_summaries(_store_url(args), filters))
    except (stores.StoreError, ValueError) as exc:
        return _failed("asya sump ls", exc)
    if args.json:
        print(json.dumps([row.to_json() for row in rows], ensure_ascii=False))
        return EXIT_OK
    _print_table(("ID", "ACTOR", "REASON", "ATTEMPT", "FAILED AT", "ERROR"), _summary_cells(rows))
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    try:
        found = asyncio.run(_read_one(_store_url(args), args.id))
    except (stores.StoreError, ValueError) as exc:
        return _failed("asya sump show", exc)
    if found is None:
        print(f"asya sump show: no sump record for {args.id}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(found, ensure_ascii=False, separators=(",", ":")))
    elif sys.stdout.isatty():
        Console().print_json(data=found)
    else:
        print(json.dumps(found, ensure_ascii=False, indent=2))
    return EXIT_OK


def _summary_cells(rows: Sequence[Summary]) -> list[tuple[str, ...]]:
    return [
        (row.id, row.actor, row.reason, "" if row.attempt is None else str(row.attempt),
         row.failed_at, redrive.cut(row.error))
        for row in rows
    ]  # fmt: skip


# ------------------------------------------------------------------------------------ redrive


def run_redrive(args: argparse.Namespace) -> int:
    try:
        filters = _filters(args)
        if args.ids and not filters.empty:
            raise UsageError("give record ids or --actor/--reason/--since, not both")
        if not args.ids and filters.empty:
            raise UsageError(
                "nothing selected: give record ids, or --actor/--reason/--since to pick them"
            )
        queue_of = redriving.queue_namer(args.namespace, args.transport)
    except (UsageError, names.InvalidName) as exc:
        return _usage("asya redrive", exc)
    state_dir = Path(args.state_dir).resolve()
    environ = {**os.environ, env.STATE_DIR: str(state_dir)}
    try:
        outcomes = asyncio.run(
            _redrive(
                _store_url(args),
                ids=args.ids,
                filters=filters,
                dry_run=args.dry_run,
                kind=args.transport,
                environ=environ,
                queue_of=queue_of,
            )
        )
    except (stores.StoreError, transports.TransportError, ValueError, ImportError) as exc:
        return _failed("asya redrive", exc)
    if args.json:
        print(json.dumps([outcome.to_json() for outcome in outcomes], ensure_ascii=False))
    elif outcomes:
        cells = [
            (outcome.id, outcome.to,
             f"{outcome.result}: {outcome.detail}" if outcome.detail else outcome.result)
            for outcome in outcomes
        ]  # fmt: skip
        _print_table(("ID", "TO", "RESULT"), cells, cut_last=False)
    else:
        print("asya redrive: no sump record matches", file=sys.stderr)
    return EXIT_OK if all(outcome.ok for outcome in outcomes) else EXIT_FAILED


async def _redrive(
    store_url: str,
    *,
    ids: Sequence[str],
    filters: Filters,
    dry_run: bool,
    kind: str,
    environ: dict[str, str],
    queue_of: redriving.QueueOf,
) -> list[redriving.Outcome]:
    store = stores.open_store(store_url)
    try:
        return await redriving.redrive_records(
            store,
            ids=ids,
            filters=filters,
            dry_run=dry_run,
            connect=lambda: transports.create(kind, environ),
            queue_of=queue_of,
            now=datetime.datetime.now(datetime.UTC),
        )
    finally:
        await store.close()


# ------------------------------------------------------------------------------------ reading


async def _summaries(store_url: str, filters: Filters) -> list[Summary]:
    store = stores.open_store(store_url)
    try:
        return await redriving.summaries(store, filters)
    finally:
        await store.close()


async def _read_one(store_url: str, envelope_id: str) -> dict[str, Any] | None:
    store = stores.open_store(store_url)
    try:
        return await redriving.read_one(store, envelope_id)
    finally:
        await store.close()


# ------------------------------------------------------------------------------------ helpers


def _filters(args: argparse.Namespace) -> Filters:
    since = None
    if args.since is not None:
        try:
            since = redrive.parse_since(args.since, now=datetime.datetime.now(datetime.UTC))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return Filters(actor=args.actor, reason=args.reason, since=since)


def _store_url(args: argparse.Namespace) -> str:
    url: str = args.sump or dev_plan.sump_url(Path(args.state_dir).resolve())
    return url


def _print_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, cut_last: bool = True
) -> None:
    terminal = sys.stdout.isatty()
    console = Console(width=None if terminal else PLAIN_WIDTH, no_color=not terminal,
                      highlight=False, soft_wrap=False)  # fmt: skip
    console.print(_table(columns, rows, width=console.width, cut_last=cut_last))


def _table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, width: int, cut_last: bool
) -> Table:
    """The last column (the error, the result) gets what the others leave of `width`: cut
    there (one line per row), or wrapped when it must be read whole (why a redrive failed).
    The others keep their whole text, so an id can always be copied."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    widths = [
        max([len(column), *(len(row[index]) for row in rows)])
        for index, column in enumerate(columns)
    ]
    # Three characters between columns: padding on both sides and the (blank) rule.
    room = width - sum(widths[:-1]) - 3 * (len(columns) - 1)
    for index, column in enumerate(columns):
        if index == len(columns) - 1:
            table.add_column(column, no_wrap=cut_last, overflow="ellipsis" if cut_last else "fold",
                             max_width=max(room, len(column)))  # fmt: skip
        else:
            table.add_column(column, no_wrap=True, min_width=widths[index])
    for row in rows:
        table.add_row(*row)
    return table


def _usage(command: str, exc: Exception) -> int:
    print(f"{command}: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _failed(command: str, exc: Exception) -> int:
    print(f"{command}: {exc}", file=sys.stderr)
    return EXIT_FAILED
