"""A handler that cannot be served must stop the runtime before the socket exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import RuntimeFactory

BAD_HANDLERS = [
    ("nodots", "is not of the form"),
    ("kinds.has space", "is not of the form"),
    ("kinds..echo", "is not of the form"),
    ("1kinds.echo", "is not of the form"),
    ("no_such_module.handler", "no module named 'no_such_module'"),
    ("pkg.nope.handler", "'pkg' has no attribute 'nope'"),
    ("kinds.no_such_function", "'kinds' has no attribute 'no_such_function'"),
    ("kinds.Model.no_such_method", "'kinds.Model' has no attribute 'no_such_method'"),
    ("broken_syntax.handler", "syntax error in"),
    ("broken_dependency.handler", "surely_not_installed_dependency"),
    ("broken_at_import.handler", "model weights missing"),
    ("odd_targets.NeedsArgs.predict", "cannot be built with no arguments"),
    ("odd_targets.BrokenInit.predict", "GPU not found"),
    ("odd_targets.VALUE", "int, which is not callable"),
    ("odd_targets.Plain", "is a class; name one of its methods"),
    ("pkg.steps.Tokenizer.split.deeper", "too deep"),
]


@pytest.mark.parametrize(("handler", "message"), BAD_HANDLERS)
def test_bad_handler_exits_before_binding_with_one_clear_line(
    start_runtime: RuntimeFactory, socket_dir: Path, handler: str, message: str
) -> None:
    runtime = start_runtime(handler, wait=False)

    code = runtime.proc.wait(timeout=20)
    stderr = runtime.stderr_text()

    assert code == 3
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, stderr
    assert message in errors[0]["message"]
    assert handler in errors[0]["message"]
    assert not (socket_dir / "asya-runtime.sock").exists()
    assert not (socket_dir / "runtime-ready").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ASYA_HANDLER": ""}, "ASYA_HANDLER is not set"),
        ({"ASYA_RUNTIME_CONCURRENCY": "0"}, "ASYA_RUNTIME_CONCURRENCY"),
        ({"ASYA_RUNTIME_CONCURRENCY": "many"}, "ASYA_RUNTIME_CONCURRENCY"),
        ({"ASYA_LOG_LEVEL": "LOUD"}, "ASYA_LOG_LEVEL"),
        ({"ASYA_LOG_FORMAT": "xml"}, "ASYA_LOG_FORMAT"),
        ({"ASYA_SOCKET_DIR": "/tmp/" + "d" * 120}, "longer than the 103 bytes"),
    ],
)
def test_bad_configuration_exits_2(
    start_runtime: RuntimeFactory, socket_dir: Path, env: dict[str, str], message: str
) -> None:
    runtime = start_runtime("kinds.echo", env=env, wait=False)

    code = runtime.proc.wait(timeout=20)
    stderr = runtime.stderr_text()

    assert code == 2
    assert message in stderr
    assert not (socket_dir / "runtime-ready").exists()


def test_text_log_format_is_human_readable(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("kinds.missing", env={"ASYA_LOG_FORMAT": "text"}, wait=False)

    runtime.proc.wait(timeout=20)
    stderr = runtime.stderr_text()

    assert " ERROR asya.runtime: cannot load handler: " in stderr
    assert "handler=kinds.missing" in stderr
