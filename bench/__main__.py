"""Asya against the floor of its broker, side by side: `python -m bench` (`make bench`).

    python -m bench [--transport rabbitmq|sqs|pubsub|local] [--concurrency 16]
                    [--messages N] [--rounds 2] [--warmup N] [--latency-seconds 10]

On one broker, with queues declared the same way (by Asya's transport; a fresh set for every
scenario run, see bench/suite.py) and the same 1 KB envelopes, after a warm-up (which also
sizes the backlogs), in rounds interleaved (floor, ours-1hop, ours-3hop, sequential, again):

- floor: `python -m bench.floor`, a bare forwarder (the broker's own SDK: consume q1, publish
  to q2, ack; no JSON) with the sidecar's prefetch, in its own process;
- ours_1hop: a sidecar and a runtime (echo handler) between the same q1 and q2;
- ours_3hop: the echo pipeline a -> b -> c -> x-sink's queue;
- sequential: ours_1hop at concurrency 1.

Throughput is a backlog drain (first to last arrival); N is sized from the warm-up so that a
round lasts about 8 s (at least 5 s), unless --messages is given. Latency is open loop: the
bench sends at a fixed 50% of the floor's throughput for --latency-seconds, each body
carrying the time it was due, and receives the output itself (one clock); `added_*_ms` is
ours minus the floor at the same percentile. CPU per 1,000 messages (ours_1hop drains) and
RSS come from /proc of the sidecar and runtime processes. `lost` counts every id sent and
never received, over the whole run.

Progress goes to stderr; the last line on stdout is the summary, also written to
bench/results/<transport>.json. SQS runs on moto and Pub/Sub on Google's emulator, started for
the run: their numbers measure those stand-ins on this machine, not AWS or Google.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from pathlib import Path

from bench.brokers import TRANSPORTS, broker
from bench.suite import SCENARIOS, Settings, run_suite

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "bench" / "results"


def parse(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--transport", default="rabbitmq", choices=TRANSPORTS)
    parser.add_argument("--concurrency", type=int, default=16, help="of ours (and the prefetch)")
    parser.add_argument(
        "--messages", type=int, default=0, help="backlog per drain (default: sized per scenario)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="messages per scenario (default 1,000; 300 on pubsub, 60 on sqs)",
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help=argparse.SUPPRESS
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.rounds < 1 or args.messages < 0 or args.warmup < 0:
        parser.error("--concurrency and --rounds must be at least 1, counts not negative")
    return Settings(
        transport=args.transport,
        concurrency=args.concurrency,
        messages=args.messages,
        rounds=args.rounds,
        warmup=args.warmup,
        latency_seconds=args.latency_seconds,
        only=args.only,
        save=not args.no_save,
    )


def source_revision() -> dict[str, object]:
    """The commit measured, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    # Earlier results in bench/results/ do not make the measured code dirty.
    changed = git("status", "--porcelain", "--", ".", ":(exclude)bench/results")
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(changed)}


def main(argv: list[str] | None = None) -> None:
    settings = parse(argv)
    source = source_revision()
    with broker(settings.transport):
        summary = asyncio.run(run_suite(settings))
    summary["source"] = source
    line = json.dumps(summary)
    if settings.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{settings.transport}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
