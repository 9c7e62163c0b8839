"""Run the semantic-triage pipeline with `asya dev`, send the sample messages, print the outcome.

    cd examples/semantic-triage && ../../.venv/bin/python demo.py [--state-dir DIR]

Uses only the commands a user would type: `asya dev .` and `asya send ... --wait`. First it
sends three probe sentences through `embed` alone, to show that the vectors come from the
model (384 dimensions, unit length, paraphrases close, unrelated text far). Then it sends
every message of samples.jsonl along `embed,classify` and prints the label, the score, the
margin and the route each one took. Exits 0 when everything succeeded and the probes behave
like a sentence-embedding model, 1 otherwise (with the tail of the dev log).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ASYA = str(Path(sys.executable).with_name("asya"))
ROUTE = "embed,classify"  # classify adds the rest: store, or review and store
SAMPLES = HERE / "samples.jsonl"
PROBES = {
    "anchor": "How do I reset my password?",
    "paraphrase": "I forgot my password, how can I change it?",
    "unrelated": "The weather in Lisbon is lovely today.",
}
SENDERS = 4  # `asya send` commands running at the same time
WAIT_SECONDS = 120  # per message; the first ones wait while the model warms up


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


def send(route: str, payload: dict[str, Any], state_dir: Path) -> tuple[int, dict[str, Any]]:
    """`asya send ROUTE --wait`: the exit code and the final envelope."""
    result = subprocess.run(
        [
            ASYA,
            "send",
            route,
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


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        math.fsum(x * x for x in a) * math.fsum(y * y for y in b)
    )


def check_embeddings(state_dir: Path) -> bool:
    """Probe `embed` alone (a route of one actor) and print what its vectors look like."""
    print("embedding check: three sentences sent along the route `embed` alone")
    vectors: dict[str, list[float]] = {}
    for name, text in PROBES.items():
        code, final = send("embed", {"text": text}, state_dir)
        if code != 0:
            print(f"  {name}: {final['status']['phase']} {final['status'].get('error')}")
            return False
        vectors[name] = final["payload"]["embedding"]
    model = final["payload"]["model"]
    dims = {len(v) for v in vectors.values()}
    norms = [math.sqrt(math.fsum(x * x for x in v)) for v in vectors.values()]
    near = cosine(vectors["anchor"], vectors["paraphrase"])
    far = cosine(vectors["anchor"], vectors["unrelated"])
    print(f"  model {model}: {', '.join(map(str, sorted(dims)))} dimensions, norms "
          + ", ".join(f"{n:.4f}" for n in norms))  # fmt: skip
    print(f'  cos("{PROBES["anchor"]}", "{PROBES["paraphrase"]}") = {near:.3f}')
    print(f'  cos("{PROBES["anchor"]}", "{PROBES["unrelated"]}")      = {far:.3f}')
    print()
    return dims == {384} and all(abs(n - 1.0) < 1e-3 for n in norms) and near > far + 0.3


def show(final: dict[str, Any]) -> None:
    payload = final["payload"]
    route = " -> ".join(final["route"]["prev"])
    print(
        f"  {payload['ticket']:<6} {payload['label']:<16} {payload['score']:>5.3f} "
        f"{payload['margin']:>6.3f}  {route}"
    )
    for line in textwrap.wrap(f'"{payload["text"]}"', 88):
        print(f"         {line}")
    if payload["needs_review"]:
        print(f"         -> human review: {payload['review_reason']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, help="where asya dev keeps queues and results")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or Path(tempfile.mkdtemp(prefix="asya-triage-"))
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "dev.log"
    samples = [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]
    print("Asya demo: semantic-triage  (embed -> classify -> [review if unsure] -> store)")
    print(f"starting `asya dev .` on the embedded transport ({state_dir})")
    started = time.monotonic()
    proc, ready = start_dev(state_dir, log_path)
    code = 0
    try:
        deadline = time.monotonic() + 120
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("asya dev did not become ready")
        print(f"ready after {time.monotonic() - started:.1f}s (embed loaded the model once)\n")
        if not check_embeddings(state_dir):
            print("the embeddings do not look like all-MiniLM-L6-v2's")
            code = 1
        sent = time.monotonic()
        with ThreadPoolExecutor(SENDERS) as pool:
            outcomes = list(pool.map(lambda s: send(ROUTE, s, state_dir), samples))
        elapsed = time.monotonic() - sent
        print("  ticket label            score margin  route")
        for exit_code, final in outcomes:
            if exit_code != 0:
                print(f"  {final['id']}: {final['status']['phase']} {final['status'].get('error')}")
                code = 1
                continue
            show(final)
        reviewed = sum(1 for _, final in outcomes if final["payload"].get("needs_review"))
        print(
            f"\n{len(samples)} messages classified in {elapsed:.1f}s, {reviewed} sent to review; "
            f"results are in {state_dir / 'results'}"
        )
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
