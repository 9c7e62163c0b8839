"""Scenario 4: the broker restarted while envelopes flow.

RabbitMQ. A private node, started for the run on free ports with its data in a temp dir
(PrivateRabbit), so restarting it never disturbs anyone else using the machine's broker. It
is restarted with `rabbitmqctl stop_app` / `start_app`, after a random 1-3 s down. Actor
queues are durable quorum queues and messages persistent (asya_transports.rabbitmq), so
every envelope fed must come out: lost 0. Stopping the app closes every connection, which
returns each hop's unacked deliveries to their queues; a delivery whose outputs were
already confirmed is handled again, so a restart may cost up to the prefetch of a, b and c
(RESTART_DUP_BOUND) extra calls of the last hop.

SQS (moto) and Pub/Sub (the emulator). Both keep everything in memory: a restart (the
process killed and started again on the same port) loses every queue, subscription and
message. Nothing Asya does can bring those back, so the run is split in rounds: each round
feeds a batch, restarts the server in the middle of it, then recreates the queues as an
operator would (ensure_queue for every actor, as `asya dev` does at start). Held to the
bounds (the Outcome's `sent`): the ids that had reached x-sink or x-sump before their
round's restart, and every id of a last batch fed after the last restart, which must all
succeed. The other ids of a round were in the server when it died ("lost to the emulator")
and are left out of `sent`: they are logged, and any of them that still come out (held by a
sidecar across the restart) are simply not counted. What is meaningful there, and checked:
the sidecars reconnect to the new server and consume from the recreated queues (the last
batch finishes), without a crash loop (sidecar restarts at most RESTARTS_BOUND in all), and
without a duplicate storm (duplicates per restart at most RESTART_DUP_BOUND).

The embedded transport has no server to restart: no local run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

from asya_shared import records
from faults.harness import Context, Run, Sizes, step_actors, stored_keys, wait_for
from faults.outcome import Outcome
from faults.scenarios import Scenario
from tests.support.services import free_port

MIDDLE_CONCURRENCY = 4
CONCURRENCY = {"a": 8, "b": MIDDLE_CONCURRENCY, "c": 8}  # as step_actors sets them
RESTART_DUP_BOUND = sum(CONCURRENCY.values())
# A sidecar rides a restart out by reconnecting, so none should exit; a process the
# supervisor had to restart once per broker restart is tolerated, a crash loop is not.
RESTARTS_PER_FAULT = 1
SETTLE_TIMEOUT_S = 600.0
PROGRESS_AFTER_RESTART_S = 120.0  # the reconnect backoff is capped at 30 s
RABBIT_START_S = 120.0
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")

SIZES = {
    "short": Sizes(envelopes=150, faults=1),
    "default": Sizes(envelopes=2000, faults=3),
    "long": Sizes(envelopes=10000, faults=5),
}


def rabbit_tool(name: str) -> str:
    """The RabbitMQ script itself, not the Debian wrapper in /usr/sbin (which switches to
    the rabbitmq user, with its own home and Erlang cookie)."""
    direct = RABBIT_BIN / name
    if direct.exists():
        return str(direct)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: the broker-restart scenario needs it")
    return found


class PrivateRabbit:
    """A RabbitMQ node of our own: free AMQP and distribution ports, data, logs, config and
    Erlang cookie (its HOME) in a temp dir; the machine's node is never touched."""

    def __init__(self, root: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rabbit-", dir=root))
        self.port = free_port()
        self.node = f"faults-{self.port}@localhost"
        (self.root / "home").mkdir()
        config = self.root / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.root / "env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(self.root / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self._log = (self.root / "server.log").open("w")
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            rabbit_tool("rabbitmq-server"),
            env=self.env,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # so close() can take the whole Erlang VM down
        )
        try:
            await self.ctl("wait", str(self.root / "pid"), "--timeout", str(int(RABBIT_START_S)))
            await self.ctl("await_startup")
        except Exception as exc:
            await self.close()
            raise RuntimeError(f"a private RabbitMQ node did not start: {exc}") from exc

    async def stop_app(self) -> None:
        await self.ctl("stop_app")

    async def start_app(self) -> None:
        await self.ctl("start_app")
        await self.ctl("await_startup")

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                await self.ctl("shutdown", timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        self._log.close()
        shutil.rmtree(self.root / "mnesia", ignore_errors=True)

    async def ctl(self, *args: str, timeout: float = RABBIT_START_S) -> str:
        proc = await asyncio.create_subprocess_exec(
            rabbit_tool("rabbitmqctl"),
            "-n",
            self.node,
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.decode()[-2000:]}")
        return out.decode()


def sidecar_restarts(run: Run) -> dict[str, int]:
    supervisor = run.pipeline.supervisor
    return {
        spec.name: supervisor.restarts(spec.name)
        for spec in run.pipeline.specs
        if spec.role == "sidecar"
    }


def check_common(outcome: Outcome, run: Run, faults: int) -> None:
    outcome.check(outcome.lost == 0, f"{outcome.lost} envelope(s) lost")
    outcome.check(
        outcome.max_dup_per_fault <= RESTART_DUP_BOUND,
        f"{outcome.max_dup_per_fault} duplicates after one restart; the bound is "
        f"{RESTART_DUP_BOUND} (the prefetch of a, b and c)",
    )
    restarts = sidecar_restarts(run)
    bound = RESTARTS_PER_FAULT * faults
    crashed = {name: n for name, n in restarts.items() if n > bound}
    outcome.check(
        not crashed,
        f"sidecars restarted {crashed} times across {faults} broker restart(s); at most "
        f"{bound} each (no crash loop)",
    )
    run.ctx.log(f"sidecar restarts: {restarts}")


async def progress_after(run: Run, before: int, total: int) -> None:
    """Until more is finished than `before` (or everything is): the pipeline moves again."""
    await wait_for(
        lambda: run.finished() > before or run.finished() >= total,
        "progress after the restart",
        PROGRESS_AFTER_RESTART_S,
    )


async def rabbitmq_restart(ctx: Context) -> Outcome:
    rabbit = PrivateRabbit(ctx.workdir)
    await rabbit.start()
    try:
        async with Run(
            ctx,
            step_actors(middle_concurrency=MIDDLE_CONCURRENCY),
            extra_env={"ASYA_RABBITMQ_URL": rabbit.url},
        ) as run:
            ids = run.ids(ctx.envelopes)
            # All fed before the first restart: what waits in the queues must survive it too.
            await run.feed_ids(ids)
            for n, threshold in enumerate(run.thresholds(len(ids), ctx.sizes.faults), 1):
                await run.at_progress(threshold)
                await asyncio.sleep(ctx.rng.uniform(0, 0.2))
                down = ctx.rng.uniform(1.0, 3.0)
                run.fault()
                before = run.finished()
                ctx.log(f"restart {n}: stop_app at {before} finished, {down:.1f}s down")
                await rabbit.stop_app()
                await asyncio.sleep(down)  # how long the broker stays down
                await rabbit.start_app()
                await progress_after(run, before, len(ids))
            await run.settle(ids, timeout=SETTLE_TIMEOUT_S)
            outcome = run.outcome("broker-restart", ids)
            check_common(outcome, run, ctx.sizes.faults)
            return outcome
    finally:
        await rabbit.close()


async def recreate_queues(run: Run) -> None:
    async with run.pipeline.open_transport() as transport:
        for actor in run.pipeline.actor_names:
            await transport.ensure_queue(run.pipeline.queue(actor))


def finished_ids(run: Run, ids: Sequence[str]) -> list[str]:
    stored = stored_keys(run.results_dir) | stored_keys(run.sump_dir)
    return [i for i in ids if records.key(i) in stored]


async def emulator_restart(ctx: Context) -> Outcome:
    """SQS and Pub/Sub: see the module's docstring for what is held and why."""
    total = ctx.envelopes
    rounds = ctx.sizes.faults
    size = max(10, total // (rounds + 1))
    held: list[str] = []
    async with Run(ctx, step_actors(middle_concurrency=MIDDLE_CONCURRENCY)) as run:
        for n in range(1, rounds + 1):
            batch = run.ids(size, prefix=f"r{n}-")
            await run.feed_ids(batch)
            finished_before = len(finished_ids(run, held))
            low, high = max(1, size // 5), max(2, size * 4 // 5)
            await run.at_progress(finished_before + ctx.rng.randint(low, high))
            run.fault()
            out_before = finished_ids(run, batch)
            held.extend(out_before)
            ctx.log(
                f"restart {n}: {len(out_before)} of {size} out; the other "
                f"{size - len(out_before)} are lost to the {ctx.transport} emulator"
            )
            await ctx.broker.stop()
            await ctx.broker.start()
            await recreate_queues(run)
        last = run.ids(size, prefix="last-")
        await run.feed_ids(last)
        held.extend(last)
        await run.settle(held, timeout=SETTLE_TIMEOUT_S)
        outcome = run.outcome("broker-restart", held)
        check_common(outcome, run, rounds)
        return outcome


async def broker_restart(ctx: Context) -> Outcome:
    if ctx.transport == "rabbitmq":
        return await rabbitmq_restart(ctx)
    return await emulator_restart(ctx)


SCENARIOS = [
    Scenario(
        "broker-restart",
        "the broker restarted mid-run",
        broker_restart,
        SIZES,
        transports=("rabbitmq", "sqs", "pubsub"),
    )
]
