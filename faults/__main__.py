"""`python -m faults` (`make faults`): run fault scenarios, one JSON line per scenario run.

    python -m faults [--transport T ...] [--scenario NAME ...] [--profile short|default|long]
                     [--seed N] [--workdir DIR]

Every scenario runs on every transport chosen (default: all four) where it means something;
each prints `{"scenario", "transport", "sent", "succeeded", "failed", "in_sump", "lost",
"duplicates", "faults_injected", "max_dup_per_fault", "seconds", "passed", "problems"}` on
stdout as it finishes. Progress goes to stderr. Exit 0 when every run passed, 1 when one did
not (or could not run), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from faults import brokers
from faults.harness import Context
from faults.outcome import Outcome
from faults.scenarios import PROFILES, Scenario, registry


def parse(argv: list[str] | None, scenarios: dict[str, Scenario]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m faults", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--transport", action="append", choices=brokers.TRANSPORTS, help="repeatable; default all"
    )
    parser.add_argument(
        "--scenario", action="append", choices=list(scenarios), help="repeatable; default all"
    )
    parser.add_argument("--profile", choices=PROFILES, default="default")
    parser.add_argument("--seed", type=int, default=None, help="for the fault timing")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and state here")
    return parser.parse_args(argv)


def progress(line: str) -> None:
    print(f"faults: {line}", file=sys.stderr, flush=True)


async def run_one(scenario: Scenario, ctx: Context) -> Outcome:
    started = time.monotonic()
    try:
        return await scenario.run(ctx)
    except Exception as exc:  # a run that could not finish is a failed run, with the reason
        outcome = Outcome(
            scenario.name, ctx.transport, 0, 0, 0, 0, 0, 0, 0, 0,
            round(time.monotonic() - started, 1),
        )  # fmt: skip
        outcome.fail(f"{type(exc).__name__}: {exc}")
        return outcome


async def main_async(args: argparse.Namespace, scenarios: dict[str, Scenario]) -> int:
    chosen = [scenarios[name] for name in (args.scenario or scenarios)]
    transports = args.transport or list(brokers.TRANSPORTS)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="asya-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    progress(f"seed {seed}; logs and state under {workdir}")
    all_passed = True
    for transport in transports:
        runs = [s for s in chosen if transport in s.transports]
        if not runs:
            continue
        broker = brokers.start(transport)
        try:
            for scenario in runs:
                progress(f"{scenario.name} on {transport} ({args.profile})")
                ctx = Context(
                    broker=broker,
                    sizes=scenario.sizes[args.profile],
                    rng=random.Random(f"{seed}-{scenario.name}-{transport}"),
                    workdir=workdir,
                    log=progress,
                )
                outcome = await run_one(scenario, ctx)
                all_passed &= outcome.passed
                print(json.dumps(outcome.to_json()), flush=True)
        finally:
            brokers.stop(broker)
    return 0 if all_passed else 1


def main(argv: list[str] | None = None) -> int:
    scenarios = registry()
    args = parse(argv, scenarios)
    return asyncio.run(main_async(args, scenarios))


if __name__ == "__main__":
    sys.exit(main())
