"""`asya sump ls|show` and `asya redrive` as a user runs them, against a real `asya dev`.

A handler fails until a flag file exists: its envelope ends in the sump; the test lists and
shows it, creates the flag, redrives it, and sees it succeed with the rest of its route and
leave the sump. On the embedded (local) transport and on RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import asya_transports as transports
from asya_shared import names, records
from tests.cli.test_dev_and_send import EVERY_BROKER, only_broker_env
from tests.support.dev_process import serving
from tests.support.services import AWS_TEST_ENV, ServiceProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ASYA = str(Path(sys.executable).with_name("asya"))
TIMEOUT_S = 120.0
# Handlers imported by the runtimes from `asya dev`'s working directory.
HANDLERS = """\
import os


class NotFixedYet(RuntimeError):
    pass


def fixable(payload):
    if not os.path.exists(payload["fixed"]):
        raise NotFixedYet(f"no flag at {payload['fixed']}\\nsecond line")
    return {**payload, "trail": [*payload.get("trail", []), "fixable"]}


def mark(payload):
    return {**payload, "trail": [*payload.get("trail", []), "mark"]}
"""
ACTORS = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: fixable}
spec: {handler: sump_handlers.fixable}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: mark}
spec: {handler: sump_handlers.mark}
"""


@dataclass
class Dev:
    proc: subprocess.Popen[str]
    workdir: Path
    args: list[str]
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def output(self) -> str:
        return "".join(self.lines[-60:])

    def asya(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ASYA, *args, *self.args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=self.workdir,
            env=self.env,
            check=False,
        )

    def sump_json(self, *filters: str) -> list[dict[str, Any]]:
        done = self.asya("sump", "ls", "--json", *filters)
        assert done.returncode == 0, done.stderr
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    def sump_ids(self) -> list[str]:
        return [row["id"] for row in self.sump_json()]

    def result(self, envelope_id: str) -> dict[str, Any] | None:
        path = self.state_dir / "results" / records.key(envelope_id)
        try:
            found: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):  # not there yet, or being written
            return None
        return found

    def wait_succeeded(self, envelope_id: str) -> dict[str, Any]:
        """x-sink's record of the envelope once it says succeeded (it said failed before)."""

        def succeeded() -> dict[str, Any] | None:
            found = self.result(envelope_id)
            return found if found and found["status"]["phase"] == "succeeded" else None

        final = wait_until(succeeded, what=f"{envelope_id} to succeed", timeout=TIMEOUT_S,
                           interval=0.1, details=self.output)  # fmt: skip
        assert final is not None
        return final

    def fail_once(self, flag: Path) -> str:
        """Send an envelope through fixable (flag missing) and mark; its id once it failed."""
        envelope_id = f"sump-{uuid.uuid4().hex[:8]}"
        payload = json.dumps({"fixed": str(flag), "trail": []})
        sent = self.asya("send", "fixable,mark", "--payload", payload, "--id", envelope_id,
                         "--wait", "90")  # fmt: skip
        assert sent.returncode == 1, sent.stdout + sent.stderr + self.output()
        wait_until(lambda: envelope_id in self.sump_ids(), what=f"{envelope_id} in the sump",
                   timeout=TIMEOUT_S, interval=0.2, details=self.output)  # fmt: skip
        return envelope_id


@pytest.fixture(
    scope="module",
    params=EVERY_BROKER,
)
def dev(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    environ = only_broker_env(request, request.param)
    workdir = tmp_path_factory.mktemp("sump")
    (workdir / "sump_handlers.py").write_text(HANDLERS)
    (workdir / "actors.yaml").write_text(ACTORS)
    args = ["--transport", request.param, "--state-dir", str(workdir / "state"),
            "--namespace", f"sump{uuid.uuid4().hex[:6]}"]  # fmt: skip
    proc = subprocess.Popen(
        [ASYA, "dev", str(workdir / "actors.yaml"), *args, "--gateway-port", "0"],
        cwd=workdir,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Dev(proc, workdir, args, environ)
    with serving(proc, running.lines):
        yield running


def test_a_failure_is_listed_shown_redriven_and_leaves_the_sump(dev: Dev, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    envelope_id = dev.fail_once(flag)

    (row,) = [row for row in dev.sump_json() if row["id"] == envelope_id]
    assert row["actor"] == "fixable"
    assert row["reason"]  # the handler's failure, whatever the sidecar calls it
    assert row["attempt"] >= 1
    assert row["error"] == f"sump_handlers.NotFixedYet: no flag at {flag}"
    assert row["failed_at"].endswith("Z")
    # The steps not run are kept behind x-sump.
    assert row["route"] == {"prev": ["fixable", "x-sink"], "curr": "x-sump", "next": ["mark"]}

    plain = dev.asya("sump", "ls")
    assert plain.returncode == 0, plain.stderr
    header = next(line for line in plain.stdout.splitlines() if "FAILED AT" in line)
    assert header.split() == ["ID", "ACTOR", "REASON", "ATTEMPT", "FAILED", "AT", "ERROR"]
    (line,) = [line for line in plain.stdout.splitlines() if envelope_id in line]
    assert line.split()[:3] == [envelope_id, "fixable", row["reason"]]
    assert "NotFixedYet: no flag at" in line
    assert "second line" not in plain.stdout

    assert dev.sump_json("--actor", "mark") == []
    assert envelope_id in [r["id"] for r in dev.sump_json("--actor", "fixable", "--since", "1h")]
    assert dev.sump_json("--since", "2999-01-01T00:00:00Z") == []

    shown = dev.asya("sump", "show", envelope_id, "--json")
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout)
    assert stored["id"] == envelope_id
    assert stored["payload"] == {"fixed": str(flag), "trail": []}
    assert stored["status"]["phase"] == "failed"
    pretty = dev.asya("sump", "show", envelope_id)
    assert json.loads(pretty.stdout) == stored
    assert "\n  " in pretty.stdout

    dry = dev.asya("redrive", envelope_id, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == [
        {"id": envelope_id, "to": "fixable", "result": "would redrive", "detail": ""}
    ]
    assert envelope_id in dev.sump_ids()

    flag.write_text("fixed")
    done = dev.asya("redrive", envelope_id)
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if envelope_id in line]
    assert line.split() == [envelope_id, "fixable", "redriven"]

    final = dev.wait_succeeded(envelope_id)
    assert final["payload"]["trail"] == ["fixable", "mark"]
    assert final["route"]["prev"] == ["fixable", "mark"]
    redriven_from = final["headers"]["redriven-from"]
    assert redriven_from["actor"] == "fixable"
    assert redriven_from["reason"] == row["reason"]
    assert redriven_from["failed_at"] == row["failed_at"]
    assert redriven_from["attempt"] == row["attempt"]
    assert redriven_from["redriven_at"] >= row["failed_at"]
    assert envelope_id not in dev.sump_ids()
    gone = dev.asya("sump", "show", envelope_id)
    assert gone.returncode == 1
    assert f"no sump record for {envelope_id}" in gone.stderr


def test_redrive_by_actor_sends_every_matching_record(dev: Dev, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    first, second = dev.fail_once(flag), dev.fail_once(flag)
    flag.write_text("fixed")
    done = dev.asya("redrive", "--actor", "fixable", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    outcomes = {item["id"]: item for item in json.loads(done.stdout)}
    assert {first, second} <= outcomes.keys()
    assert all(item["result"] == "redriven" for item in outcomes.values())
    for envelope_id in (first, second):
        assert dev.wait_succeeded(envelope_id)["headers"]["redriven-from"]["actor"] == "fixable"
    assert not {first, second} & set(dev.sump_ids())


def test_a_redrive_that_cannot_be_sent_keeps_the_record(dev: Dev) -> None:
    # A failure at an actor this pipeline does not run: its queue does not exist.
    envelope_id = f"ghost-{uuid.uuid4().hex[:8]}"
    ghost = {
        "id": envelope_id,
        "parent_id": None,
        "route": {"prev": ["ghost", "x-sink"], "curr": "x-sump", "next": []},
        "headers": {},
        "status": {
            "phase": "failed",
            "actor": "ghost",
            "attempt": 1,
            "reason": "HandlerError",
            "updated_at": "2026-12-01T10:00:00.000Z",
        },
        "payload": {"n": 1},
    }
    path = dev.state_dir / "sump" / records.key(envelope_id)
    path.write_text(json.dumps(ghost))
    done = dev.asya("redrive", envelope_id, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    (outcome,) = json.loads(done.stdout)
    assert outcome["to"] == "ghost"
    assert outcome["result"] == "not sent"
    assert "the record stays" in outcome["detail"]
    assert json.loads(path.read_text()) == ghost
    path.unlink()


def test_refused_and_unknown_records_stay_and_exit_1(dev: Dev) -> None:
    envelope_id = f"unparsable-{uuid.uuid4().hex[:8]}"
    wrapped = {
        "id": envelope_id,
        "parent_id": None,
        "route": {"prev": ["fixable"], "curr": "x-sump", "next": []},
        "headers": {},
        "status": {"phase": "failed", "actor": "fixable", "attempt": 1, "reason": "ParseError"},
        "payload": {"original": "{not json", "encoding": "utf-8"},
    }
    path = dev.state_dir / "sump" / records.key(envelope_id)
    path.write_text(json.dumps(wrapped))
    done = dev.asya("redrive", envelope_id, "no-such-id", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    outcomes = json.loads(done.stdout)
    assert [item["id"] for item in outcomes] == [envelope_id, "no-such-id"]
    assert outcomes[0]["result"] == "refused"
    assert "ParseError" in outcomes[0]["detail"]
    assert outcomes[1] == {
        "id": "no-such-id", "to": "", "result": "refused", "detail": "no sump record for this id"
    }  # fmt: skip
    assert path.exists()
    path.unlink()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing selected"),
        (("some-id", "--actor", "fixable"), "not both"),
        (("--since", "yesterday"), "--since 'yesterday'"),
    ],
)
def test_bad_redrive_arguments_exit_2(dev: Dev, args: tuple[str, ...], message: str) -> None:
    done = dev.asya("redrive", *args)
    assert done.returncode == 2
    assert message in done.stderr


# ------------------------------------------------------------------ the S3 store, no pipeline


def failure(envelope_id: str, *, actor: str, failed_at: str) -> dict[str, Any]:
    """A sump record as x-sink hands a handler failure on (see tests/shared/test_redrive.py)."""
    return {
        "id": envelope_id,
        "parent_id": None,
        "route": {"prev": [actor, "x-sink"], "curr": "x-sump", "next": ["after"]},
        "headers": {"x-tenant": "acme"},
        "status": {
            "phase": "failed",
            "actor": actor,
            "attempt": 2,
            "reason": "HandlerError",
            "updated_at": failed_at,
            "error": {"type": "Boom", "message": "it broke"},
        },
        "payload": {"n": 1},
    }


async def received(state_dir: Path, queue: str, count: int) -> list[dict[str, Any]]:
    """Take the `count` messages waiting in a local queue, and check nothing else waits."""
    environ = {"ASYA_STATE_DIR": str(state_dir)}
    async with transports.create("local", environ) as transport:
        # Sent means confirmed: they are all there already.
        assert await transport.queue_depth(queue) == count
        receiver = transport.receive(queue, prefetch=count)
        bodies = []
        for _ in range(count):
            delivery = await asyncio.wait_for(anext(receiver), timeout=30)
            bodies.append(json.loads(delivery.body))
            await delivery.ack()
        await receiver.aclose()
        return bodies


def test_ls_and_redrive_with_the_s3_store(moto_server: ServiceProcess, tmp_path: Path) -> None:
    import boto3  # type: ignore[import-untyped]

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ASYA_", "AWS_"))}
    environ.update(AWS_TEST_ENV)
    environ["ASYA_S3_ENDPOINT"] = moto_server.url
    bucket = f"asya-sump-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=bucket)
    stored = {
        "older": failure("older", actor="work", failed_at="2026-12-01T10:00:00.000Z"),
        "newer": failure("newer", actor="work", failed_at="2026-12-01T11:00:00.000Z"),
        "elsewhere": failure("elsewhere", actor="ghost", failed_at="2026-12-01T12:00:00.000Z"),
    }
    for envelope_id, item in stored.items():
        client.put_object(Bucket=bucket, Key=f"sump/{records.key(envelope_id)}",
                          Body=json.dumps(item).encode())  # fmt: skip
    state_dir = tmp_path / "state"
    common = ["--sump", f"s3://{bucket}/sump", "--state-dir", str(state_dir),
              "--transport", "local", "--namespace", "s3test"]  # fmt: skip

    def asya(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ASYA, *args, *common], capture_output=True, text=True,
                              timeout=TIMEOUT_S, env=environ, check=False)  # fmt: skip

    def left() -> list[str]:
        listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(item["Key"] for item in listing)

    listed = asya("sump", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == ["elsewhere", "newer", "older"]
    assert json.loads(asya("sump", "show", "newer", "--json").stdout) == stored["newer"]

    # Only work's queue exists: ghost's redrive cannot be sent, and its record stays.
    queue = names.queue_name("s3test", "work")
    asyncio.run(_ensure_local_queue(state_dir, queue))
    dry = asya("redrive", "--actor", "work", "--dry-run", "--json")
    assert [item["result"] for item in json.loads(dry.stdout)] == ["would redrive"] * 2
    assert len(left()) == 3
    done = asya("redrive", "newer", "older", "elsewhere", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    outcomes = json.loads(done.stdout)
    assert [(item["id"], item["to"], item["result"]) for item in outcomes] == [
        ("newer", "work", "redriven"),
        ("older", "work", "redriven"),
        ("elsewhere", "ghost", "not sent"),
    ]
    assert left() == [f"sump/{records.key('elsewhere')}"]
    sent = asyncio.run(received(state_dir, queue, 2))
    assert sorted(body["id"] for body in sent) == ["newer", "older"]
    for body in sent:
        assert body["route"] == {"prev": [], "curr": "work", "next": ["after"]}
        assert body["status"]["attempt"] == 1
        assert body["headers"]["x-tenant"] == "acme"
        assert (
            body["headers"]["redriven-from"]["failed_at"]
            == stored[body["id"]]["status"]["updated_at"]
        )


async def _ensure_local_queue(state_dir: Path, queue: str) -> None:
    async with transports.create("local", {"ASYA_STATE_DIR": str(state_dir)}) as transport:
        await transport.ensure_queue(queue)
