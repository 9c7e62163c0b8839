"""Round trips of POST /invoke against a real runtime subprocess, echo handler, 1 KB payload.

    python -m bench.runtime_invoke [--requests N] [--client raw|httpx|both]

Scenarios: a sync echo at runtime concurrency 1 with one connection (sequential), and an
async echo at runtime concurrency 8 with 8 connections each sending back to back. The `raw`
client is a minimal keep-alive HTTP/1.1 client, so the numbers are the runtime's own cost;
`httpx` shows what a general-purpose client adds. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import asya_runtime

RUNTIME_FILE = Path(asya_runtime.__file__).with_name("runtime.py")
PAYLOAD = {"data": "x" * 1000}  # about 1 KB once wrapped in an envelope


def make_body() -> bytes:
    envelope = {
        "id": "bench",
        "route": {"prev": [], "curr": "echo", "next": []},
        "headers": {},
        "payload": PAYLOAD,
    }
    return json.dumps(envelope).encode()


class RawClient:
    """One keep-alive connection speaking just enough HTTP/1.1 for POST /invoke."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, path: str) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def post(self, body: bytes) -> int:
        self.writer.write(
            b"POST /invoke HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()


async def drive(socket_path: str, *, client: str, connections: int, requests: int) -> list[float]:
    body = make_body()
    per_connection = requests // connections
    latencies: list[float] = []

    if client == "raw":
        clients = [await RawClient.connect(socket_path) for _ in range(connections)]

        async def worker(index: int) -> None:
            conn = clients[index]
            for _ in range(per_connection):
                started = time.perf_counter()
                status = await conn.post(body)
                latencies.append(time.perf_counter() - started)
                assert status == 200, status

        await asyncio.gather(*(worker(i) for i in range(connections)))
        for conn in clients:
            await conn.close()
        return latencies

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    transport = httpx.AsyncHTTPTransport(uds=socket_path, limits=limits)
    async with httpx.AsyncClient(transport=transport, base_url="http://runtime") as http:

        async def http_worker() -> None:
            for _ in range(per_connection):
                started = time.perf_counter()
                response = await http.post(
                    "/invoke", content=body, headers={"content-type": "application/json"}
                )
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.status_code

        await asyncio.gather(*(http_worker() for _ in range(connections)))
    return latencies


def start_runtime(handler: str, concurrency: int, socket_dir: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ASYA_HANDLER": handler,
        "ASYA_SOCKET_DIR": socket_dir,
        "ASYA_RUNTIME_CONCURRENCY": str(concurrency),
        "ASYA_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, str(RUNTIME_FILE)], env=env, cwd=Path(__file__).parent)
    ready = Path(socket_dir) / "runtime-ready"
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"runtime for {handler} did not start")
        time.sleep(0.01)
    return proc


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_scenario(*, handler: str, concurrency: int, client: str, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="asya-bench-") as socket_dir:
        proc = start_runtime(handler, concurrency, socket_dir)
        try:
            socket_path = str(Path(socket_dir) / "asya-runtime.sock")
            warmup = max(200, requests // 10)
            asyncio.run(drive(socket_path, client=client, connections=concurrency, requests=warmup))
            started = time.perf_counter()
            latencies = asyncio.run(
                drive(socket_path, client=client, connections=concurrency, requests=requests)
            )
            elapsed = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return {
        "handler": handler,
        "runtime_concurrency": concurrency,
        "connections": concurrency,
        "client": client,
        "requests": len(latencies),
        "calls_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--client", choices=["raw", "httpx", "both"], default="both")
    args = parser.parse_args()
    clients = ["raw", "httpx"] if args.client == "both" else [args.client]
    results = []
    for client in clients:
        for handler, concurrency in (("handlers.echo", 1), ("handlers.async_echo", 8)):
            result = run_scenario(
                handler=handler, concurrency=concurrency, client=client, requests=args.requests
            )
            print(json.dumps(result), file=sys.stderr)
            results.append(result)
    summary = {
        "bench": "runtime_invoke",
        "payload_bytes": len(make_body()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
