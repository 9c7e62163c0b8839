"""Run the fan-out pipeline with `asya dev`, send one document, collect one result per chunk.

    cd examples/fan-out && ../../.venv/bin/python demo.py [--state-dir DIR]

`asya send split,summarize --wait` returns the envelope that kept the document's id (chunk
0). The other chunks travel as their own envelopes, `<id>-1`, `<id>-2`, ..., and x-sink
stores each under its id, so the demo waits for those files in the result store too. Exits 0
when every chunk came back and the chunks add up to the whole document, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ASYA = str(Path(sys.executable).with_name("asya"))
ROUTE = "split,summarize"
DOCUMENT = HERE / "document.txt"
WAIT_SECONDS = 60


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


def send(payload: dict[str, Any], state_dir: Path) -> tuple[int, dict[str, Any]]:
    """`asya send split,summarize --wait`: the exit code and the envelope of chunk 0."""
    result = subprocess.run(
        [
            ASYA,
            "send",
            ROUTE,
            "--payload",
            json.dumps(payload),
            "--wait",
            str(WAIT_SECONDS),
            "--state-dir",
            str(state_dir),
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS + 30,
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"asya send exited {result.returncode}: {result.stderr.strip()}")
    final: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, final


def wait_for_chunks(results: Path, first: dict[str, Any]) -> list[dict[str, Any]]:
    """Every chunk's final envelope, in chunk order, once all of them are stored.

    Fan-out ids are `<id>-<i>`; the result store keeps each envelope as `<id>.json` (uuids
    need no escaping).
    """
    total = first["payload"]["chunks"]
    paths = [results / f"{first['id']}-{index}.json" for index in range(1, total)]
    deadline = time.monotonic() + WAIT_SECONDS
    while not all(path.exists() for path in paths):
        if time.monotonic() > deadline:
            missing = [path.name for path in paths if not path.exists()]
            raise RuntimeError(f"no result within {WAIT_SECONDS}s for {', '.join(missing)}")
        time.sleep(0.1)
    return [first] + [json.loads(path.read_text()) for path in paths]


def show(finals: list[dict[str, Any]]) -> None:
    print(f"  {'envelope id':<40} {'parent_id':<10} chunk  words  keywords")
    for final in finals:
        payload = final["payload"]
        parent = (final["parent_id"] or "-")[:8]
        print(
            f"  {final['id']:<40} {parent:<10} {payload['chunk'] + 1:>2}/{payload['chunks']:<2} "
            f"{payload['words']:>6}  {', '.join(payload['keywords'])}"
        )
        print(f"      {payload['summary']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, help="where asya dev keeps queues and results")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or Path(tempfile.mkdtemp(prefix="asya-fan-out-"))
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "dev.log"
    title, _, text = DOCUMENT.read_text().partition("\n\n")
    print("Asya demo: fan-out  (split -> one summarize per chunk)")
    print(f"starting `asya dev .` on the embedded transport ({state_dir})")
    proc, ready = start_dev(state_dir, log_path)
    code = 0
    try:
        deadline = time.monotonic() + 90
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("asya dev did not become ready")
        words = len(text.split())
        print(f'sending "{title}" ({words} words) along {ROUTE}\n')
        started = time.monotonic()
        exit_code, first = send({"title": title, "text": text}, state_dir)
        if exit_code != 0:
            raise RuntimeError(f"the document failed: {first['status']}")
        finals = wait_for_chunks(state_dir / "results", first)
        elapsed = time.monotonic() - started
        show(finals)
        ids = {final["id"] for final in finals}
        counted = sum(final["payload"]["words"] for final in finals)
        workers = {final["payload"]["worker"] for final in finals}
        print(
            f"\n{len(finals)} chunks -> {len(ids)} envelopes with distinct ids in {elapsed:.1f}s; "
            f"{counted} of {words} words counted by {len(workers)} summarize process(es)"
        )
        print(f"results are in {state_dir / 'results'}")
        if len(ids) != len(finals) or counted != words:
            print("the chunks do not add up to the document")
            code = 1
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        print(f"demo failed: {exc!r}\n--- last lines of {log_path} ---")
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
