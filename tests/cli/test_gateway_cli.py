"""`asya gateway` as a user runs it (a subprocess), and how `asya dev` chooses its gateway's
port and flows."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asya_cli import dev, dev_flows
from asya_cli.gateway import environ_with_flags
from asya_cli.local_pipeline import free_ports
from asya_gateway.flows import FlowsError
from asya_gateway.server import GatewaySettings, SettingsError
from tests.support.waiting import wait_until

ASYA = str(Path(sys.executable).with_name("asya"))
PROCESS_TIMEOUT_S = 60.0


def gateway_env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    return {**environ, "ASYA_LOG_FORMAT": "text", **extra}


def start(args: list[str], cwd: Path, environ: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ASYA, "gateway", *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[str]]]:
    """Gateways a test started: stopped with SIGTERM at its end, which must exit 0."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert code == 0, proc.communicate()[0]


def test_serves_both_ports_from_flags_and_stops_on_sigterm(
    tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    port, internal = free_ports(2)
    store = tmp_path / "tasks.db"
    proc = start(
        ["--port", str(port), "--internal-port", str(internal), "--store", f"sqlite:///{store}"],
        tmp_path,
        gateway_env(ASYA_STATE_DIR=str(tmp_path / "state")),
    )
    stop.append(proc)
    public, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal}"

    wait_until(lambda: healthy(public) and healthy(private), what="both ports", timeout=60)

    assert httpx.get(f"{public}/v1/tasks", timeout=10).json() == {"tasks": [], "next_cursor": None}
    # The internal port takes reports only.
    assert httpx.get(f"{private}/v1/tasks", timeout=10).status_code == 404
    assert store.exists()


def test_every_flag_can_come_from_the_environment_and_a_flag_wins(
    tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    env_port, flag_port, internal = free_ports(3)
    flows = tmp_path / "flows.yaml"
    flows.write_text("flows:\n  - {name: one, route: [a]}\n")
    environ = gateway_env(
        ASYA_GATEWAY_PORT=str(env_port),
        ASYA_GATEWAY_INTERNAL_PORT=str(internal),
        ASYA_GATEWAY_FLOWS=str(flows),
        ASYA_GATEWAY_RETENTION="7d",
        ASYA_STATE_DIR=str(tmp_path / "state"),
    )
    proc = start(["--port", str(flag_port)], tmp_path, environ)
    stop.append(proc)
    url = f"http://127.0.0.1:{flag_port}"

    wait_until(lambda: healthy(url), what="the gateway on the flag's port", timeout=60)

    assert not healthy(f"http://127.0.0.1:{env_port}")
    assert healthy(f"http://127.0.0.1:{internal}")
    # The flows file came from ASYA_GATEWAY_FLOWS: a flow it does not name is unknown.
    answer = httpx.post(f"{url}/v1/tasks", json={"flow": "two", "payload": {}}, timeout=10)
    assert answer.status_code == 404
    # The store defaults to ASYA_STATE_DIR/gateway.db.
    assert (tmp_path / "state" / "gateway.db").exists()


def test_the_default_store_is_a_sqlite_file_under_dot_asya(
    tmp_path: Path, stop: list[subprocess.Popen[str]]
) -> None:
    port, internal = free_ports(2)
    proc = start(["--port", str(port), "--internal-port", str(internal)], tmp_path, gateway_env())
    stop.append(proc)

    wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), what="the gateway", timeout=60)

    assert (tmp_path / ".asya" / "gateway.db").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--host", "0.0.0.0"], 2, "--insecure"),
        (["--flows", "/does/not/exist.yaml"], 2, "cannot read the flows file"),
        (["--retention", "forever"], 2, "not understood"),
        (["--port", "99999"], 2, "not a port"),
        (["--store", "mysql://db"], 3, "names no store"),
    ],
)
def test_settings_it_cannot_use_exit_with_a_message(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    port, internal = free_ports(2)
    ports = ["--port", str(port), "--internal-port", str(internal)]

    result = subprocess.run(
        [ASYA, "gateway", *ports, *args],
        cwd=tmp_path,
        env=gateway_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_a_port_in_use_exits_3_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (internal,) = free_ports(1)

        result = subprocess.run(
            [ASYA, "gateway", "--port", str(port), "--internal-port", str(internal)],
            cwd=tmp_path,
            env=gateway_env(),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
            check=False,
        )

    assert result.returncode == 3
    assert f"127.0.0.1:{port}" in result.stderr


def test_flags_are_laid_over_the_environment() -> None:
    args = argparse.Namespace(
        host="0.0.0.0", port=None, internal_port="9", store=None, flows=None,
        retention=None, insecure=True, sump="file:///var/asya/sump",
    )  # fmt: skip
    environ = {"ASYA_GATEWAY_PORT": "7", "ASYA_GATEWAY_INTERNAL_PORT": "8"}

    merged = environ_with_flags(args, environ)

    assert merged == {
        "ASYA_GATEWAY_HOST": "0.0.0.0",
        "ASYA_GATEWAY_PORT": "7",
        "ASYA_GATEWAY_INTERNAL_PORT": "9",
        "ASYA_GATEWAY_INSECURE": "true",
        "ASYA_SUMP_STORE": "file:///var/asya/sump",
    }
    settings = GatewaySettings.from_env(merged)  # --insecure lets 0.0.0.0 go without keys
    assert (settings.host, settings.port, settings.internal_port) == ("0.0.0.0", 7, 9)
    with pytest.raises(SettingsError, match="--insecure"):
        GatewaySettings.from_env({**merged, "ASYA_GATEWAY_INSECURE": "false"})


# --- asya dev: its gateway's port and flows ---------------------------------------------------


def test_dev_takes_8080_when_free_else_a_free_port_unless_one_was_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (free,) = free_ports(1)

        assert dev.gateway_port(0) == (0, None)
        assert dev.gateway_port(free) == (free, None)
        with pytest.raises(OSError, match=f"port {port} is in use"):
            dev.gateway_port(port)
        monkeypatch.setattr(dev, "DEFAULT_GATEWAY_PORT", port)  # the default, taken
        chosen, note = dev.gateway_port(None)

    assert chosen == 0
    assert note is not None
    assert f"port {port} is in use" in note


def test_dev_serves_the_one_flows_file_under_its_paths(tmp_path: Path) -> None:
    (tmp_path / "pipeline").mkdir()
    flows = tmp_path / "pipeline" / "flows.yaml"
    flows.write_text("flows:\n  - {name: one, route: [a]}\n")
    (tmp_path / "actors.yaml").write_text("kind: AsyncActor\n")

    assert dev_flows.prepare([tmp_path], tmp_path / "state") == flows.resolve()
    assert dev_flows.prepare([tmp_path / "actors.yaml"], tmp_path / "state") is None


def test_dev_merges_several_flows_files_and_refuses_a_name_in_two(tmp_path: Path) -> None:
    for part, name in (("x", "one"), ("y", "two")):
        (tmp_path / part).mkdir()
        (tmp_path / part / "flows.yaml").write_text(f"flows:\n  - {{name: {name}, route: [a]}}\n")

    merged = dev_flows.prepare([tmp_path], tmp_path / "state")

    assert merged == tmp_path / "state" / "flows.yaml"
    from asya_gateway.flows import load_flows

    assert sorted(load_flows(merged)) == ["one", "two"]
    (tmp_path / "y" / "flows.yaml").write_text("flows:\n  - {name: one, route: [b]}\n")
    with pytest.raises(dev_flows.FlowsConflict, match="'one' is defined in both"):
        dev_flows.prepare([tmp_path], tmp_path / "state")


def test_dev_refuses_a_flows_file_the_gateway_would_refuse(tmp_path: Path) -> None:
    (tmp_path / "flows.yaml").write_text("flows:\n  - {name: one, route: [Not_An_Actor]}\n")

    with pytest.raises(FlowsError, match=r"flows\.yaml.*Not_An_Actor"):
        dev_flows.prepare([tmp_path], tmp_path / "state")
