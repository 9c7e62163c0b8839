"""One sidecar process next to one runtime: health, logs, metrics, side events, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from asya_transports.local import LocalTransport
from tests.support.pipeline import HANDLERS
from tests.support.runtime import RuntimeFactory
from tests.support.services import free_port
from tests.support.waiting import eventually, wait_until

pytestmark = pytest.mark.slow


class Sidecar:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in {"actor": "a", **labels}.items())
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(f"{name}{{{wanted}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
async def queues(tmp_path: Path) -> AsyncIterator[LocalTransport]:
    transport = LocalTransport(tmp_path / "state")
    async with transport:
        for actor in ("a", "b", "x-sink", "x-sump"):
            await transport.ensure_queue(f"asya-default-{actor}")
        yield transport


@pytest.fixture
def start_sidecar(tmp_path: Path, socket_dir: Path) -> Iterator[Any]:
    started: list[Sidecar] = []

    def start(**env: str) -> Sidecar:
        port = free_port()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
        full_env.update(
            {
                "ASYA_ACTOR": "a",
                "ASYA_TRANSPORT": "local",
                "ASYA_STATE_DIR": str(tmp_path / "state"),
                "ASYA_SOCKET_DIR": str(socket_dir),
                "ASYA_METRICS_HOST": "127.0.0.1",
                "ASYA_METRICS_PORT": str(port),
                "ASYA_LOG_FORMAT": "json",
            }
        )
        full_env.update(env)
        proc = subprocess.Popen(
            [sys.executable, "-m", "asya_sidecar"], env=full_env, stderr=subprocess.PIPE, text=True
        )
        sidecar = Sidecar(proc, port)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        if sidecar.proc.poll() is None:
            sidecar.proc.kill()
            sidecar.proc.wait()


def envelope(envelope_id: str, payload: Any = None, next_: list[str] | None = None) -> bytes:
    return json.dumps(
        {
            "id": envelope_id,
            "route": {"curr": "a", "next": ["b"] if next_ is None else next_},
            "headers": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "payload": payload or {},
        }
    ).encode()


async def test_health_follows_the_runtime_and_work_waits_for_it(
    start_runtime: RuntimeFactory, start_sidecar: Any, queues: LocalTransport
) -> None:
    runtime = start_runtime("kinds.echo")
    sidecar = start_sidecar()
    await eventually(lambda: sidecar.get("/healthz")[0] == 200, "the sidecar to be healthy")

    runtime.stop()  # the runtime goes away
    await queues.send("asya-default-a", envelope("waits"))
    await eventually(lambda: sidecar.get("/healthz")[0] == 503, "health to turn 503")
    assert json.loads(sidecar.get("/healthz")[1])["reason"] == "runtime unavailable"
    assert sidecar.metric("asya_sidecar_runtime_up") == 0

    start_runtime("kinds.echo")  # ...and comes back
    await eventually(lambda: sidecar.get("/healthz")[0] == 200, "health to recover")
    await eventually(
        lambda: sidecar.metric("asya_sidecar_envelopes_sent_total", destination="b") == 1,
        "the waiting envelope to be processed",
    )
    assert await queues.queue_depth("asya-default-a") == 0


async def test_metrics_count_what_happened(
    start_runtime: RuntimeFactory, start_sidecar: Any, queues: LocalTransport
) -> None:
    start_runtime("kinds.echo")
    sidecar = start_sidecar()
    for i in range(3):
        await queues.send("asya-default-a", envelope(f"m{i}"))
    await queues.send("asya-default-a", envelope("last", next_=[]))
    await queues.send("asya-default-a", b"garbage")

    await eventually(
        lambda: sidecar.metric("asya_sidecar_envelopes_received_total") == 5,
        "five envelopes received",
    )
    await eventually(lambda: sidecar.metric("asya_sidecar_envelopes_in_flight") == 0, "idle")

    assert sidecar.metric("asya_sidecar_envelopes_processed_total", outcome="routed") == 3
    assert sidecar.metric("asya_sidecar_envelopes_processed_total", outcome="succeeded") == 1
    assert sidecar.metric("asya_sidecar_envelopes_processed_total", outcome="sumped") == 1
    assert sidecar.metric("asya_sidecar_envelopes_sent_total", destination="b") == 3
    assert sidecar.metric("asya_sidecar_envelopes_sent_total", destination="x-sink") == 1
    assert sidecar.metric("asya_sidecar_envelopes_sent_total", destination="x-sump") == 1
    assert sidecar.metric("asya_sidecar_envelopes_failed_total", reason="ParseError") == 1
    assert sidecar.metric("asya_sidecar_runtime_seconds_count") == 4
    assert sidecar.metric("asya_sidecar_processing_seconds_count") == 5
    assert sidecar.metric("asya_sidecar_runtime_up") == 1


async def test_json_logs_carry_actor_envelope_and_trace(
    start_runtime: RuntimeFactory, start_sidecar: Any, queues: LocalTransport
) -> None:
    start_runtime("failing.quota")
    sidecar = start_sidecar()
    await queues.send("asya-default-a", envelope("traced", {"model": "m"}))
    await eventually(
        lambda: sidecar.metric("asya_sidecar_envelopes_failed_total", reason="HandlerError") == 1,
        "the failure",
    )

    sidecar.proc.send_signal(signal.SIGTERM)
    _, stderr = sidecar.proc.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines()]

    assert sidecar.proc.returncode == 0
    assert all(line["actor"] == "a" for line in lines)
    about = [line for line in lines if line.get("envelope_id") == "traced"]
    assert about, stderr
    assert about[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert lines[-1]["message"] == "stopped"


class EventSink(BaseHTTPRequestHandler):
    received: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        EventSink.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_side_events_are_posted_to_the_events_url(
    start_runtime: RuntimeFactory, start_sidecar: Any, queues: LocalTransport
) -> None:
    server = HTTPServer(("127.0.0.1", 0), EventSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    EventSink.received = []
    start_runtime("flow.progress", cwd=HANDLERS)
    sidecar = start_sidecar(ASYA_EVENTS_URL=f"http://127.0.0.1:{server.server_port}/events")

    await queues.send("asya-default-a", envelope("with-events"))
    # Live: events yielded back to back usually share a post, but may come in several.
    await eventually(
        lambda: sum(len(post["events"]) for post in EventSink.received) >= 3,
        "the side events to be posted",
    )
    server.shutdown()

    assert {(post["actor"], post["envelope_id"]) for post in EventSink.received} == {
        ("a", "with-events")
    }
    assert [event for post in EventSink.received for event in post["events"]] == [
        {"progress": 1 / 3},
        {"progress": 2 / 3},
        {"progress": 1.0},
    ]
    assert sidecar.metric("asya_sidecar_fly_events_total") == 3


def test_invalid_configuration_exits_2_listing_the_problems(start_sidecar: Any) -> None:
    sidecar = start_sidecar(ASYA_CONCURRENCY="zero", ASYA_TRANSPORT="carrier-pigeon")

    _, stderr = sidecar.proc.communicate(timeout=30)

    assert sidecar.proc.returncode == 2
    assert "ASYA_CONCURRENCY='zero'" in stderr
    assert "ASYA_TRANSPORT='carrier-pigeon'" in stderr


def test_a_runtime_that_never_comes_exits_1(start_sidecar: Any) -> None:
    sidecar = start_sidecar(ASYA_RUNTIME_READY_TIMEOUT="1")

    _, stderr = sidecar.proc.communicate(timeout=30)

    assert sidecar.proc.returncode == 1
    assert "did not become ready within 1s" in stderr


def test_sigterm_while_waiting_for_the_runtime_exits_0(start_sidecar: Any) -> None:
    sidecar = start_sidecar()
    wait_until(lambda: sidecar.get("/healthz")[0] == 503, what="health to answer 503")

    sidecar.proc.send_signal(signal.SIGTERM)

    assert sidecar.proc.wait(timeout=30) == 0


async def test_unknown_fields_and_headers_travel_to_the_next_queue(
    start_runtime: RuntimeFactory, start_sidecar: Any, queues: LocalTransport
) -> None:
    start_runtime("kinds.echo")
    start_sidecar()
    sent = json.loads(envelope("fields", {"p": 1}))
    sent["producer-metadata"] = {"batch": 7}
    sent["headers"]["x-tenant"] = "acme"

    await queues.send("asya-default-a", json.dumps(sent).encode())
    receiver = queues.receive("asya-default-b", prefetch=1)
    delivery = await asyncio.wait_for(receiver.__anext__(), 30)
    forwarded = json.loads(delivery.body)
    await delivery.ack()
    await receiver.aclose()

    assert forwarded["producer-metadata"] == {"batch": 7}
    assert forwarded["headers"]["x-tenant"] == "acme"
    assert forwarded["route"] == {"prev": ["a"], "curr": "b", "next": []}
    assert forwarded["status"]["phase"] == "pending"
    assert forwarded["payload"] == {"p": 1}


def test_a_configuration_error_is_logged_in_the_format_asked_for(start_sidecar: Any) -> None:
    # `asya dev` asks for text: a JSON line in the middle of its output is hard to read.
    sidecar = start_sidecar(ASYA_CONCURRENCY="zero", ASYA_LOG_FORMAT="text")

    _, stderr = sidecar.proc.communicate(timeout=30)

    assert sidecar.proc.returncode == 2
    assert "ASYA_CONCURRENCY='zero'" in stderr
    assert " ERROR asya.sidecar" in stderr
    assert not [line for line in stderr.splitlines() if line.lstrip().startswith("{")]
