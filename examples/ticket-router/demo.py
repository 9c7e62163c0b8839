"""`make demo`: run this pipeline with `asya dev`, send a few tickets, print what happened.

Uses only the commands a user would type: `asya dev .` and `asya send ... --wait`.
Exits 0 when every ticket came back as expected, 1 otherwise (with the dev log's tail).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASYA = str(Path(sys.executable).with_name("asya"))
ROUTE = "classify,respond"
TICKETS = [
    "I was charged twice this month, please refund the extra payment",
    "The dashboard is down and every request returns error 500",
    "I cannot log in: my account is locked after the 2fa reset",
    "Something is off with my account and my last invoice",
    "Your app crashed, and I also want a refund",
]


def start_dev(state_dir: Path, log_path: Path) -> tuple[subprocess.Popen[str], threading.Event]:
    proc = subprocess.Popen(
        [ASYA, "dev", ".", "--state-dir", str(state_dir)],
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()

    def follow() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if line.startswith("asya dev: ready"):
                    ready.set()

    threading.Thread(target=follow, daemon=True).start()
    return proc, ready


def send(text: str, state_dir: Path) -> tuple[int, dict]:
    result = subprocess.run(
        [
            ASYA,
            "send",
            ROUTE,
            "--payload",
            json.dumps({"text": text}),
            "--wait",
            "30",
            "--state-dir",
            str(state_dir),
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"asya send exited {result.returncode}: {result.stderr.strip()}")
    return result.returncode, json.loads(result.stdout)


def show(text: str, final: dict) -> None:
    payload, status = final["payload"], final["status"]
    route = " -> ".join(final["route"]["prev"])
    print(f'  ticket  "{text}"')
    print(f"  route   {route}   ({status['phase']})")
    print(
        f"  class   {payload['category']} (confidence {payload['confidence']:.2f})"
        + ("  -> sent to human review" if payload.get("needs_human") else "")
    )
    for n, line in enumerate(textwrap.wrap(payload["reply"], 74)):
        print(f"  {'reply' if n == 0 else '':<7} {line}")
    print()


def main() -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="asya-demo-"))
    log_path = state_dir / "dev.log"
    print("Asya demo: ticket-router  (classify -> [review if unsure] -> respond)")
    print(f"starting `asya dev examples/ticket-router` on the embedded transport ({state_dir})\n")
    proc, ready = start_dev(state_dir, log_path)
    code = 0
    try:
        deadline = time.monotonic() + 90
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("asya dev did not become ready")
        started = time.monotonic()
        for text in TICKETS:
            exit_code, final = send(text, state_dir)
            show(text, final)
            if exit_code != 0:
                code = 1
        elapsed = time.monotonic() - started
        print(
            f"{len(TICKETS)} tickets through the pipeline in {elapsed:.1f}s; "
            f"results are in {state_dir / 'results'}"
        )
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        print(f"demo failed: {exc}\n--- last lines of {log_path} ---")
        print("\n".join(log_path.read_text().splitlines()[-30:]))
        code = 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            stopped = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stopped = -1
    if stopped != 0:
        print(f"asya dev exited with {stopped}; see {log_path}")
        code = 1
    else:
        print("asya dev stopped cleanly")
    return code


if __name__ == "__main__":
    sys.exit(main())
