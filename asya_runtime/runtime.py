"""Asya handler runtime: serves one user handler over HTTP/1.1 on a Unix socket.

The operator ships this file alone (in a ConfigMap) and runs it with the user's own
interpreter, so it must stay a single module that imports only the standard library and
runs on Python 3.8 or newer. It knows nothing about queues or brokers: the sidecar next to
it owns the envelope's journey; this file only turns one envelope into result frames.

Contract (see docs/runtime-protocol.md):
- env: ASYA_HANDLER (required), ASYA_SOCKET_DIR, ASYA_RUNTIME_CONCURRENCY, ASYA_LOG_LEVEL,
  ASYA_LOG_FORMAT.
- start-up order: load the handler, bind the socket, write the ready file. A handler that
  cannot be loaded exits non-zero before the socket exists.
- POST /invoke -> 200 {"frames": [...]} | 200 {"frames": [], "parked": ...} | 204 |
  400 msg_parsing_error | 500 processing_error; with `X-Asya-Fly: live`, a call whose
  handler yields FLY answers a chunked application/x-ndjson stream instead (LiveFly).
- GET /healthz -> 200 while serving, 503 while draining.

Sections, in file order (each starts at a `# ----` banner):
- configuration: Config, read from the ASYA_* environment.
- logging: the JSON and text log formats.
- handler loading: ASYA_HANDLER -> a Handler and its kind (sync, async, generator, ...).
- errors: the errors answered for one request; error_details, the JSON the sidecar matches.
- envelope: parse_envelope, the checks a request body must pass.
- ABI: Session, what a generator handler's GET/SET/DEL/FLY/PARK yields do to the envelope.
- invocation: Invoker, which runs the handler and turns its result into frames.
- HTTP/1.1: read_request and render_response, the minimal protocol both engines speak.
- live side events: LiveFly, the ndjson answer of a call that streams its FLY events, and
  its two writers (_LoopFly for the asyncio engine, _ThreadFly for threaded connections).
- server: Server, the request loop both engines share, dispatch, and the asyncio engine
  that serves async handlers.
- sync handlers: a thread each: ThreadedConnections, the engine for sync handlers, and its
  timeout watchdog.
- main: start-up, signals, drain and exit codes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import datetime
import heapq
import importlib
import inspect
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Awaitable, Callable, Dict, List, Optional, Protocol, Tuple

# Exit codes, so that a crash-looping pod says which side is wrong.
EXIT_OK = 0
EXIT_BAD_CONFIG = 2  # an env var is missing or malformed
EXIT_BAD_HANDLER = 3  # ASYA_HANDLER names something that cannot be served
EXIT_SERVE_FAILED = 4  # the socket could not be bound
# A sync handler overran its timeout; its thread cannot be stopped, so the runtime finished
# the other calls and exits to be restarted clean (EX_TEMPFAIL).
EXIT_RESTART = 75
TIMEOUT_HEADER = "x-asya-timeout"
# `X-Asya-Fly: live` asks for FLY events as they are yielded (see LiveFly).
FLY_HEADER = "x-asya-fly"
FLY_LIVE = "live"

SOCKET_NAME = "asya-runtime.sock"
READY_NAME = "runtime-ready"
DEFAULT_SOCKET_DIR = "/var/run/asya"
# asyncio.timeout (Python 3.11+); older Pythons fall back to asyncio.wait_for.
_timeout_scope: Callable[[float], Any] | None = getattr(asyncio, "timeout", None)

log = logging.getLogger("asya.runtime")

Json = Any  # a value json.dumps accepts
Frame = Dict[str, Any]  # {"payload": ..., "route": {...}, "headers": {...}}
# What one call produced: frames to route on, and FLY side events that are not routed.
Outcome = Tuple[List[Frame], List[Json]]


# --------------------------------------------------------------------------- configuration


class ConfigError(Exception):
    """An environment variable is missing or malformed."""


class Config:
    def __init__(
        self,
        *,
        handler: str,
        socket_dir: str = DEFAULT_SOCKET_DIR,
        concurrency: int = 1,
        log_level: str = "INFO",
        log_format: str = "json",
    ) -> None:
        self.handler = handler
        self.socket_dir = socket_dir
        self.concurrency = concurrency
        self.log_level = log_level
        self.log_format = log_format

    @property
    def socket_path(self) -> str:
        return os.path.join(self.socket_dir, SOCKET_NAME)

    @property
    def ready_path(self) -> str:
        return os.path.join(self.socket_dir, READY_NAME)

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> Config:
        handler = environ.get("ASYA_HANDLER", "").strip()
        if not handler:
            raise ConfigError(
                "ASYA_HANDLER is not set: point it at your handler, e.g. "
                "ASYA_HANDLER=my_module.my_function or my_module.MyClass.my_method"
            )
        raw_concurrency = environ.get("ASYA_RUNTIME_CONCURRENCY", "1").strip() or "1"
        try:
            concurrency = int(raw_concurrency)
        except ValueError:
            concurrency = 0
        if concurrency < 1:
            raise ConfigError(
                f"ASYA_RUNTIME_CONCURRENCY={raw_concurrency!r} is not a positive integer"
            )
        level = (environ.get("ASYA_LOG_LEVEL", "INFO").strip() or "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"ASYA_LOG_LEVEL={level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            )
        fmt = (environ.get("ASYA_LOG_FORMAT", "json").strip() or "json").lower()
        if fmt not in ("json", "text"):
            raise ConfigError(f"ASYA_LOG_FORMAT={fmt!r} is not 'json' or 'text'")
        socket_dir = environ.get("ASYA_SOCKET_DIR", "").strip() or DEFAULT_SOCKET_DIR
        config = cls(
            handler=handler,
            socket_dir=socket_dir,
            concurrency=concurrency,
            log_level=level,
            log_format=fmt,
        )
        # AF_UNIX paths are limited by sun_path (108 bytes on Linux, 104 on macOS).
        if len(os.fsencode(config.socket_path)) > 103:
            raise ConfigError(
                f"socket path {config.socket_path!r} is longer than the 103 bytes a Unix "
                "socket allows; set ASYA_SOCKET_DIR to a shorter directory"
            )
        return config


# --------------------------------------------------------------------------------- logging

# Record attributes that the JSON formatter copies into each line when a caller sets them.
_LOG_FIELDS = ("envelope_id", "handler", "error_type", "duration_ms", "path", "traceback")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and "traceback" not in line:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_utc_iso(record.created), record.levelname, record.name + ":", record.getMessage()]
        for name in _LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None and name != "traceback":
                parts.append(f"{name}={value}")
        text = " ".join(parts)
        trace = getattr(record, "traceback", None)
        if trace:
            text += "\n" + str(trace).rstrip()
        elif record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _utc_iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(*, level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# ------------------------------------------------------------------------- handler loading


class HandlerLoadError(Exception):
    """ASYA_HANDLER names something that cannot be served."""


SYNC, ASYNC, GENERATOR, ASYNC_GENERATOR = "sync", "async", "generator", "async-generator"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Handler:
    """A loaded handler: the callable and how it must be driven."""

    def __init__(self, *, spec: str, func: Callable[..., Any], kind: str) -> None:
        self.spec = spec
        self.func = func
        self.kind = kind


def load_handler(spec: str) -> Handler:
    """Resolve `module.function` or `module.Class.method`, importing the longest module prefix.

    A class in the path is instantiated once, with no arguments, and its method is bound to
    that instance, so expensive set-up (model weights, clients) happens at start-up only.
    """
    parts = spec.split(".")
    if len(parts) < 2 or not all(_IDENTIFIER.match(part) for part in parts):
        raise HandlerLoadError(
            f"ASYA_HANDLER={spec!r} is not of the form module.function or "
            "module.Class.method (dot-separated Python identifiers)"
        )
    if os.getcwd() not in sys.path:
        # Handlers live in the user's working directory, not next to this file.
        sys.path.insert(0, os.getcwd())

    module, attr_path = _import_longest_prefix(spec, parts)
    if len(attr_path) > 2:
        raise HandlerLoadError(
            f"ASYA_HANDLER={spec!r}: after module {module.__name__!r} the path "
            f"{'.'.join(attr_path)!r} is too deep; name a function or Class.method"
        )

    target: Any = module
    owner_name = module.__name__
    for index, name in enumerate(attr_path):
        if not hasattr(target, name):
            raise HandlerLoadError(
                f"ASYA_HANDLER={spec!r}: {owner_name!r} has no attribute {name!r}"
            )
        target = getattr(target, name)
        owner_name = f"{owner_name}.{name}"
        is_last = index == len(attr_path) - 1
        if inspect.isclass(target) and not is_last:
            target = _instantiate(spec, target)
    if inspect.isclass(target):
        raise HandlerLoadError(
            f"ASYA_HANDLER={spec!r} is a class; name one of its methods, e.g. "
            f"{spec}.process (the class is then built once with no arguments)"
        )
    if not callable(target):
        raise HandlerLoadError(
            f"ASYA_HANDLER={spec!r} is a {type(target).__name__}, which is not callable"
        )
    return Handler(spec=spec, func=target, kind=_kind_of(target))


def _import_longest_prefix(spec: str, parts: list[str]) -> tuple[Any, list[str]]:
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            return importlib.import_module(module_name), parts[cut:]
        except ModuleNotFoundError as exc:
            # Only "this prefix is not a module" means try a shorter one; a module that
            # exists but fails to import one of *its* dependencies is the user's real error.
            if exc.name is None or not _is_prefix_of(exc.name, module_name):
                raise HandlerLoadError(
                    f"ASYA_HANDLER={spec!r}: importing {module_name!r} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        except SyntaxError as exc:
            raise HandlerLoadError(
                f"ASYA_HANDLER={spec!r}: syntax error in {exc.filename}, line {exc.lineno}: "
                f"{exc.msg}"
            ) from exc
        except BaseException as exc:
            raise HandlerLoadError(
                f"ASYA_HANDLER={spec!r}: importing {module_name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    raise HandlerLoadError(
        f"ASYA_HANDLER={spec!r}: no module named {parts[0]!r} (searched the working "
        f"directory {os.getcwd()!r} and sys.path)"
    )


def _is_prefix_of(missing: str, module_name: str) -> bool:
    return module_name == missing or module_name.startswith(missing + ".")


def _instantiate(spec: str, cls: type) -> Any:
    try:
        return cls()
    except TypeError as exc:
        raise HandlerLoadError(
            f"ASYA_HANDLER={spec!r}: class {cls.__qualname__} cannot be built with no "
            f"arguments ({exc}); give every __init__ parameter a default, e.g. from env"
        ) from exc
    except BaseException as exc:
        raise HandlerLoadError(
            f"ASYA_HANDLER={spec!r}: building {cls.__qualname__}() raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _kind_of(func: Callable[..., Any]) -> str:
    probe: Any = func
    if not (inspect.isfunction(probe) or inspect.ismethod(probe)):
        # A callable instance: its __call__ decides the kind.
        probe = getattr(func, "__call__", func)  # noqa: B004 - we want the method itself
    if inspect.isasyncgenfunction(probe):
        return ASYNC_GENERATOR
    if inspect.isgeneratorfunction(probe):
        return GENERATOR
    if inspect.iscoroutinefunction(probe):
        return ASYNC
    return SYNC


# ------------------------------------------------------------------------------ errors


class InvokeError(Exception):
    """Base of the errors the runtime reports for one request."""


class ParseError(InvokeError):
    """The request body is not an envelope: answered 400 msg_parsing_error."""


class AbiError(InvokeError):
    """A generator handler misused the ABI (unknown path, read-only field, bad value)."""


class ResultError(InvokeError):
    """The handler's result cannot be sent back (for example it is not JSON)."""


class ActorTimeout(TimeoutError):
    """The handler did not finish within the timeout the sidecar asked for."""


def _type_name(cls: type) -> str:
    module = cls.__module__
    if module in ("builtins", "__main__", __name__):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def error_details(exc: BaseException) -> dict[str, Any]:
    """The JSON description of an exception that the sidecar matches retry rules against.

    An exception with a `retry_after` attribute of seconds (a rate-limit error that read a
    server's Retry-After, as the built-in callers' and several SDKs' do) passes it on: the
    sidecar waits at least that long before the retry.
    """
    details: dict[str, Any] = {
        "type": _type_name(type(exc)),
        "mro": [_type_name(cls) for cls in type(exc).__mro__ if cls is not object],
        "message": str(exc),
        "traceback": "".join(
            traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__))
        ),
    }
    retry_after = getattr(exc, "retry_after", None)
    if (
        isinstance(retry_after, (int, float))
        and not isinstance(retry_after, bool)
        and math.isfinite(retry_after)
        and retry_after >= 0
    ):
        details["retry_after"] = float(retry_after)
    return details


def _user_frames(tb: Any) -> Any:
    """Skip the runtime's own frames (and asyncio's, the thread pool's) above the handler's."""
    first = tb
    while tb is not None and _is_internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb if tb is not None else first


def _is_internal(filename: str) -> bool:
    return (
        filename == __file__
        or f"{os.sep}asyncio{os.sep}" in filename
        or f"{os.sep}concurrent{os.sep}futures{os.sep}" in filename
    )


# ------------------------------------------------------------------------------- envelope


def parse_envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ParseError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise ParseError(f"envelope must be a JSON object, got {type(envelope).__name__}")
    missing = [key for key in ("id", "route", "payload") if key not in envelope]
    if missing:
        raise ParseError(f"envelope lacks required field(s): {', '.join(missing)}")
    route = envelope["route"]
    if not isinstance(route, dict):
        raise ParseError(f"route must be an object, got {type(route).__name__}")
    if not isinstance(route.get("curr"), str):
        raise ParseError("route.curr must be a string")
    for key in ("prev", "next"):
        value = route.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ParseError(f"route.{key} must be a list of strings")
    headers = envelope.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise ParseError(f"headers must be an object, got {type(headers).__name__}")
    return envelope


# ------------------------------------------------------------------------------------ ABI

VERBS = ("GET", "SET", "DEL", "FLY", "PARK")
_ARITY = {"GET": 1, "SET": 2, "DEL": 1, "FLY": 1, "PARK": 1}
# The one frame a parked call answers with: the envelope goes nowhere from here, because
# something outside the pipeline (a batch job's watcher) will continue it later.
PARKED = "parked"

# `.root`, `.root.key`, each optionally followed by `[i]` or `[a:b]`.
_PATH = re.compile(
    r"^\.(?P<root>[A-Za-z_]+)(?:\.(?P<key>[A-Za-z0-9_\-]+))?(?:\[(?P<index>[^\]]*)\])?$"
)
_LIST_FIELDS = ("prev", "next")


class _Path:
    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise AbiError(f"a path must be a string like '.route.next', got {text!r}")
        match = _PATH.match(text)
        if not match:
            raise AbiError(f"path {text!r} is not of the form .field, .field.key or .field[i]")
        self.text = text
        self.root: str = match.group("root")
        self.key: str | None = match.group("key")
        self.index: Any | None = None
        raw_index = match.group("index")
        if raw_index is not None:
            self.index = _parse_subscript(text, raw_index)
            if not (self.root == "route" and self.key in _LIST_FIELDS):
                raise AbiError(f"path {text!r}: only .route.prev and .route.next take [i]")


def _parse_subscript(path: str, raw: str) -> Any:
    try:
        if ":" not in raw:
            return int(raw)
        bounds = raw.split(":")
        if len(bounds) != 2:
            raise ValueError(raw)
        start, stop = (int(b) if b.strip() else None for b in bounds)
        return slice(start, stop)
    except ValueError:
        raise AbiError(f"path {path!r}: {raw!r} is not an index or a start:stop slice") from None


class Session:
    """The handler's view of one envelope while a generator handler runs.

    Each `yield payload` snapshots the current route and headers into a frame, so that a
    SET after a yield affects only the frames that follow it.
    """

    def __init__(self, envelope: dict[str, Any], live: LiveFly | None = None) -> None:
        self.envelope = envelope
        # With a live stream, FLY events leave as they are yielded instead of with the answer.
        self.live = live
        route = envelope["route"]
        self.prev: list[str] = list(route.get("prev", []))
        self.curr: str = route["curr"]
        self.next: list[str] = list(route.get("next", []))
        self.headers: dict[str, Json] = dict(envelope.get("headers") or {})
        self.frames: list[Frame] = []
        self.fly: list[Json] = []
        self.parked: Json = None
        self.is_parked = False

    def step(self, item: Any) -> Any:
        """Act on one yielded item; the return value is sent back into the generator."""
        if isinstance(item, tuple) and item and isinstance(item[0], str) and item[0] in VERBS:
            verb, args = item[0], item[1:]
            if len(args) != _ARITY[verb]:
                raise AbiError(
                    f"yield {verb!r} takes {_ARITY[verb]} argument(s) after the verb, "
                    f"got {len(args)}: {item!r}"
                )
            if verb == "GET":
                return self.get(_Path(args[0]))
            if verb == "PARK":
                self.park(args[0])
            elif verb == "SET":
                self.set(_Path(args[0]), args[1])
            elif verb == "DEL":
                self.delete(_Path(args[0]))
            elif self.live is None:
                self.fly.append(args[0])
            else:
                self.live.send(args[0])
            return None
        self.emit(item)
        return None

    def park(self, note: Json) -> None:
        if self.frames or self.is_parked:
            raise AbiError(
                "yield 'PARK' ends the call without results: it cannot follow a result or "
                "another PARK"
            )
        self.parked, self.is_parked = note, True

    def outcome(self) -> Outcome:
        if self.is_parked:
            return [{PARKED: self.parked}], self.fly
        return self.frames, self.fly

    def emit(self, payload: Json) -> None:
        if self.is_parked:
            raise AbiError("a parked call cannot emit results: nothing may be yielded after PARK")
        self.frames.append(
            {
                "payload": payload,
                "route": {"prev": self.prev, "curr": self.curr, "next": list(self.next)},
                "headers": dict(self.headers),
            }
        )

    def get(self, path: _Path) -> Any:
        root, key = path.root, path.key
        if root in ("id", "parent_id") and key is None:
            return self.envelope.get(root)
        if root == "route":
            if key is None:
                return {"prev": list(self.prev), "curr": self.curr, "next": list(self.next)}
            if key == "curr" and path.index is None:
                return self.curr
            if key in _LIST_FIELDS:
                items = self.prev if key == "prev" else self.next
                if path.index is None:
                    return list(items)
                return _read_index(path, items)
        if root == "headers":
            return dict(self.headers) if key is None else self.headers.get(key)
        if root == "status":
            status = self.envelope.get("status")
            if not isinstance(status, dict):
                return None
            return copy.deepcopy(status) if key is None else copy.deepcopy(status.get(key))
        raise AbiError(
            f"GET {path.text!r}: unknown path; readable are .id, .parent_id, "
            ".route[.prev|.curr|.next], .headers[.<key>], .status[.<key>]"
        )

    def set(self, path: _Path, value: Any) -> None:
        self._check_writable("SET", path)
        if path.root == "headers":
            if path.key is None:
                if not isinstance(value, dict):
                    raise AbiError(
                        f"SET {path.text!r}: headers must be an object, got {type(value).__name__}"
                    )
                self.headers = dict(value)
            else:
                self.headers[path.key] = value
            return
        # .route.next, whole or by index/slice
        if path.index is None or isinstance(path.index, slice):
            self._check_actor_list(path, value)
            if path.index is None:
                self.next = list(value)
            else:
                self.next[path.index] = list(value)
            return
        self._check_actor_name(path, value)
        try:
            self.next[path.index] = value
        except IndexError:
            raise AbiError(
                f"SET {path.text!r}: index out of range for route.next {self.next!r}"
            ) from None

    def delete(self, path: _Path) -> None:
        self._check_writable("DEL", path)
        if path.root == "headers":
            if path.key is None:
                self.headers = {}
            else:
                self.headers.pop(path.key, None)
            return
        if path.index is None:
            self.next = []
            return
        try:
            del self.next[path.index]
        except IndexError:
            raise AbiError(
                f"DEL {path.text!r}: index out of range for route.next {self.next!r}"
            ) from None

    @staticmethod
    def _check_writable(verb: str, path: _Path) -> None:
        if path.root == "headers" and path.index is None:
            return
        if path.root == "route" and path.key == "next":
            return
        if path.root == "route" and path.key in ("prev", "curr", None):
            field = "route" if path.key is None else f"route.{path.key}"
            raise AbiError(
                f"{verb} {path.text!r}: {field} is read-only; a handler may change only "
                ".route.next and .headers"
            )
        if path.root in ("id", "parent_id", "status", "payload"):
            raise AbiError(
                f"{verb} {path.text!r}: .{path.root} is read-only; a handler may change only "
                ".route.next and .headers"
            )
        raise AbiError(
            f"{verb} {path.text!r}: unknown path; writable are .route.next "
            "(also [i] and [a:b]) and .headers[.<key>]"
        )

    @staticmethod
    def _check_actor_list(path: _Path, value: Any) -> None:
        if not isinstance(value, (list, tuple)):
            raise AbiError(
                f"SET {path.text!r}: expected a list of actor names, got "
                f"{type(value).__name__} {value!r}"
            )
        for item in value:
            Session._check_actor_name(path, item)

    @staticmethod
    def _check_actor_name(path: _Path, value: Any) -> None:
        if not isinstance(value, str) or not value:
            raise AbiError(f"SET {path.text!r}: actor names are non-empty strings, got {value!r}")


def _read_index(path: _Path, items: list[str]) -> Any:
    assert path.index is not None
    try:
        value = items[path.index]
    except IndexError:
        raise AbiError(f"GET {path.text!r}: index out of range for {items!r}") from None
    return list(value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------- invocation


class Invoker:
    """Runs the handler for one envelope and turns its result into frames.

    `invoke` runs async handlers on the event loop, a semaphore making calls over the limit
    wait; `run_here` runs sync ones in the thread of their connection (ThreadedConnections).
    A sync generator that an async handler hands back is driven on a pool as wide as the
    concurrency limit, so that it does not block the loop.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        concurrency: int,
        on_stuck: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.handler = handler
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="asya-handler"
        )
        # Called when a thread keeps running a handler nobody waits for any more.
        self._on_stuck = on_stuck
        self.stuck_threads = 0

    def close(self) -> None:
        # With a stuck thread, waiting for the pool would wait forever.
        self._pool.shutdown(wait=self.stuck_threads == 0)

    async def invoke(
        self,
        envelope: dict[str, Any],
        *,
        timeout: float | None = None,
        live: LiveFly | None = None,
    ) -> Outcome:
        """Return (frames, fly events). Handler exceptions propagate unchanged.

        Past `timeout` seconds the call raises ActorTimeout and the handler is cancelled; a
        generator it handed to the pool cannot be, so that thread is reported stuck. With
        `live`, FLY events go to it as they are yielded and are not in the outcome.
        """
        async with self._slots:
            if timeout is None:
                return await self._run(envelope, live)
            if _timeout_scope is None:  # Python < 3.11
                try:
                    return await asyncio.wait_for(self._run(envelope, live), timeout)
                except asyncio.TimeoutError:
                    raise self.timed_out(timeout) from None
            # asyncio.timeout runs the call in this task, where wait_for would start one
            # more task per call; and it tells its own expiry from a handler that raised
            # TimeoutError.
            scope = _timeout_scope(timeout)
            try:
                async with scope:
                    return await self._run(envelope, live)
            except TimeoutError:
                if scope.expired():
                    raise self.timed_out(timeout) from None
                raise

    def timed_out(self, timeout: float) -> ActorTimeout:
        return ActorTimeout(f"{self.handler.spec} did not finish within {timeout:g}s")

    async def _run(self, envelope: dict[str, Any], live: LiveFly | None) -> Outcome:
        kind, func = self.handler.kind, self.handler.func
        payload = envelope["payload"]
        if kind == ASYNC_GENERATOR:
            return await _drive_async(func(payload), Session(envelope, live))
        assert kind == ASYNC, "sync handlers are served by ThreadedConnections (run_here)"
        return await self._plain_result(await func(payload), envelope, live)

    async def _plain_result(
        self, result: Any, envelope: dict[str, Any], live: LiveFly | None
    ) -> Outcome:
        # A sync callable may still hand back a coroutine or a generator (decorators do).
        if inspect.isawaitable(result):
            result = await result
        if inspect.isasyncgen(result):
            return await _drive_async(result, Session(envelope, live))
        if inspect.isgenerator(result):
            outcome: Outcome = await self._in_thread(_drive_sync, result, Session(envelope, live))
            return outcome
        return _frames_of(result, envelope)

    def run_here(
        self,
        envelope: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        live: LiveFly | None = None,
    ) -> Outcome:
        """Run a sync handler (or sync generator) in the calling thread.

        For thread-served connections (see ThreadedConnections): the thread that read the
        request runs the handler, so no hand-off to a pool and back. An awaitable or async
        generator that a sync callable returns is finished on the event loop, as in `_run`.
        """
        kind, func = self.handler.kind, self.handler.func
        payload = envelope["payload"]
        if kind == GENERATOR:
            return _drive_sync(func(payload), Session(envelope, live))
        result = func(payload)
        if inspect.isawaitable(result) or inspect.isasyncgen(result):
            future = asyncio.run_coroutine_threadsafe(
                self._plain_result(result, envelope, live), loop
            )
            outcome: Outcome = future.result()
            return outcome
        if inspect.isgenerator(result):
            return _drive_sync(result, Session(envelope, live))
        return _frames_of(result, envelope)

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        work = self._pool.submit(func, *args)
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            if not work.cancel() and not work.done():
                # Already running: the thread runs on; count it until it returns, if ever.
                self.stuck_threads += 1
                work.add_done_callback(self._thread_returned)
                self._on_stuck(f"{self.handler.spec} kept running past its timeout")
            raise

    def _thread_returned(self, _: Any) -> None:
        self.stuck_threads -= 1


def _frames_of(result: Any, envelope: dict[str, Any]) -> Outcome:
    """The frames for a plain (not generator) result: one per list item, none for None."""
    if result is None:
        return [], []
    route = envelope["route"]
    frame_route = {
        "prev": route.get("prev", []),
        "curr": route["curr"],
        "next": route.get("next", []),
    }
    headers = envelope.get("headers") or {}
    payloads = result if isinstance(result, list) else [result]
    frames = [{"payload": p, "route": frame_route, "headers": headers} for p in payloads]
    return frames, []


def _drive_sync(gen: Any, session: Session) -> Outcome:
    reply: Any = None
    try:
        while True:
            item = gen.send(reply)
            reply = session.step(item)
    except StopIteration as stop:
        if stop.value is not None:
            raise AbiError(
                "a generator handler returned a value; emit results with `yield payload` "
                f"instead (returned {type(stop.value).__name__})"
            ) from None
    finally:
        gen.close()
    return session.outcome()


async def _drive_async(agen: Any, session: Session) -> Outcome:
    reply: Any = None
    try:
        while True:
            item = await agen.asend(reply)
            reply = session.step(item)
    except StopAsyncIteration:
        pass
    finally:
        await agen.aclose()
    return session.outcome()


# ---------------------------------------------------------------------------- HTTP/1.1


class HttpError(Exception):
    """The request is not HTTP/1.1 we can serve; the connection is answered and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    def __init__(
        self, *, method: str, target: str, version: str, headers: dict[str, str], body: bytes
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        else:
            self.keep_alive = "close" not in connection


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
MAX_HEADER_BYTES = 64 * 1024


class Reader(Protocol):
    """What read_request needs: asyncio.StreamReader, or _BlockingReader in a thread."""

    async def readuntil(self, separator: bytes = b"\n") -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...


async def read_request(reader: Reader) -> Request | None:
    """Read one request; None on a clean end of stream between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "connection closed in the middle of the request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head exceeds {MAX_HEADER_BYTES} bytes") from None
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise HttpError(400, f"malformed request line {lines[0]!r}")
    method, target, version = request_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"malformed header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise HttpError(400, "Content-Length is not an integer") from None
        if length < 0:
            raise HttpError(400, "Content-Length is negative")
        body = await reader.readexactly(length) if length else b""
    elif method == "POST":
        raise HttpError(411, "POST needs Content-Length or chunked Transfer-Encoding")
    else:
        body = b""
    return Request(method=method, target=target, version=version, headers=headers, body=body)


async def _read_chunked(reader: Reader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(400, f"malformed chunk size {size_line!r}") from None
        if size == 0:
            # Skip optional trailer fields up to the blank line that ends the body.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def render_response(status: int, body: bytes | None, *, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    if status != 204:
        head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(body or b'')}")
    if not keep_alive:
        head.append("Connection: close")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return data + body if body else data


def dump_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# -------------------------------------------------------------------- live side events


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


_LAST_CHUNK = b"0\r\n\r\n"


class LiveFly:
    """The FLY events of one call, sent as they are yielded (asked for with X-Asya-Fly: live).

    Nothing is sent until the handler yields its first FLY: a call without one is answered
    as usual. From the first FLY on, the answer is `200` application/x-ndjson, chunked: a
    line `{"fly": [event, ...]}` per write (events yielded while the previous write was
    pending share a line; none waits for more), then `finish` writes the line
    `{"answer": {"status": ..., "body": ...}}` with what the ordinary answer would have been,
    and the last chunk.

    `send` may be called from any thread (a sync generator runs in a thread). One writer
    does the writing, so lines leave in order and the final line is the last; subclasses
    say which writer: the event loop (_LoopFly) or a thread of its own (_ThreadFly). A peer
    that went away only stops the writing: the call still ends as it would have.

    The sidecar asks every call to stream, so a stream that never starts must cost next to
    nothing: the state below is class-level defaults until the first event, and one lock
    (_FLY_LOCK) serves every stream, its critical sections being a few list operations.
    """

    started = False  # the first FLY was yielded: the answer is the stream
    closed = False  # finished: later events (from a call given up on) are dropped
    _head_sent = False
    _events: list[bytes]  # serialised, not yet written: set at the first event

    def __init__(self, *, keep_alive: bool) -> None:
        self._keep_alive = keep_alive

    def send(self, event: Json) -> None:
        """Queue one event for the wire; raises ResultError if it is not JSON."""
        try:
            data = dump_json(event)
        except (TypeError, ValueError) as exc:
            # Raised at the handler's yield, so the call fails as a non-JSON result would.
            raise ResultError(f"a FLY event is not JSON-serialisable: {exc}") from None
        with _FLY_LOCK:
            if self.closed:
                return
            if not self.started:
                self.started, self._events = True, [data]
                self._begin()
            else:
                self._events.append(data)
        self._wake()

    def finish(self, status: int, body: bytes | None) -> bool:
        """End the stream with the answer the call would have had, if the stream began.

        False when no FLY was yielded: the caller answers as usual (and later events are
        dropped, so that answer stays the only one).
        """
        with _FLY_LOCK:
            if self.closed:  # already ended (by the watchdog): there is one answer only
                return self.started
            self.closed = True
            if not self.started:
                return False
        final = b'{"answer":{"status":%d,"body":' % status + (body or b"null") + b"}}\n"
        self._end(_chunk(final) + _LAST_CHUNK)
        return True

    def _take(self) -> bytes:
        """What is queued, as bytes for the wire: the head first, then one line of events."""
        with _FLY_LOCK:
            events, self._events = self._events, []
            head_due, self._head_sent = not self._head_sent, True
        data = b""
        if head_due:
            data = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\n"
                + (b"" if self._keep_alive else b"Connection: close\r\n")
                + b"\r\n"
            )
        if events:
            data += _chunk(b'{"fly":[' + b",".join(events) + b"]}\n")
        return data

    def _begin(self) -> None:
        """The first event is queued (called holding _FLY_LOCK)."""

    def _wake(self) -> None:
        """Events are queued: have the writer send them soon."""
        raise NotImplementedError

    def _end(self, last: bytes) -> None:
        """Write what is queued, then `last`; the stream is over."""
        raise NotImplementedError


_FLY_LOCK = threading.Lock()


class _LoopFly(LiveFly):
    """Writes on the event loop (asyncio connections): a write per loop turn at most.

    An async generator that yields several FLY without awaiting has them share a line,
    because the write runs only when the handler gives the loop a turn.
    """

    _scheduled = False

    def __init__(
        self,
        *,
        keep_alive: bool,
        write: Callable[[bytes], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(keep_alive=keep_alive)
        self._write = write
        self._loop = loop

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            # Threadsafe: a sync generator that an async handler returned runs in the pool.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to write to
                self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        self._scheduled = False  # before taking, so an event queued after is not missed
        if self.closed:
            return  # finish wrote everything
        data = self._take()
        if data:
            self._write(data)

    def _end(self, last: bytes) -> None:
        # On the loop, after the call: nothing can be queued behind this.
        self._write(self._take() + last)


class _ThreadFly(LiveFly):
    """Writes from a thread of its own (thread-served connections), started at the first FLY.

    The handler's thread only queues, so a handler is never held up by a slow reader, and
    events yielded while a write is under way share the next line. The watchdog may end the
    stream of a call past its timeout; `after` then shuts the connection down once the last
    chunk is out.
    """

    _ready: threading.Event | None = None  # set: something to write
    _last: bytes | None = None
    _after: Callable[[], None] | None = None
    _writer: threading.Thread | None = None
    _broken = False

    def __init__(self, *, keep_alive: bool, sock: socket.socket) -> None:
        super().__init__(keep_alive=keep_alive)
        self._sock = sock

    def _begin(self) -> None:
        self._ready = threading.Event()
        self._writer = threading.Thread(
            target=self._write_all, args=(self._ready,), name="asya-fly", daemon=True
        )
        self._writer.start()

    def _wake(self) -> None:
        assert self._ready is not None  # _begin ran before the first wake
        self._ready.set()

    def _end(self, last: bytes) -> None:
        assert self._ready is not None  # only a started stream ends here
        self._last = last
        self._ready.set()
        if self._writer is not None and self._after is None:
            self._writer.join()  # the connection thread goes on only once everything is out

    def abandon(self, status: int, body: bytes | None, after: Callable[[], None]) -> bool:
        """For the watchdog: end the stream without waiting for the writer, then `after`."""
        self._after = after
        return self.finish(status, body)

    def _write_all(self, ready: threading.Event) -> None:
        while True:
            ready.wait()
            ready.clear()
            last = self._last  # read before taking: events queued before it are in `data`
            data = self._take()
            if last is not None:
                data += last
            if data and not self._broken:
                try:
                    self._sock.sendall(data)
                except OSError:
                    self._broken = True  # the peer went away; the call still runs to its end
            if last is not None:
                if self._after is not None:
                    self._after()
                return


# -------------------------------------------------------------------------------- server

Response = Tuple[int, Optional[bytes]]
# Runs the handler for one envelope: (envelope, timeout=..., live=...) -> awaitable Outcome.
Invoke = Callable[..., Awaitable[Outcome]]


class Peer(Protocol):
    """One client connection as Server.serve_requests sees it: _StreamPeer or _Connection."""

    @property
    def reader(self) -> Reader: ...

    @property
    def abandoned(self) -> bool:
        """The watchdog has answered the call in flight: the loop must not answer it too."""

    @property
    def invoke(self) -> Invoke: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait until what was written can be buffered no further (StreamWriter.drain)."""

    def live_fly(self, *, keep_alive: bool) -> LiveFly:
        """A stream for the FLY events of one call on this connection (X-Asya-Fly: live)."""

    def begin(self) -> bool:
        """A request has arrived: mark the connection busy; False to close it instead."""

    def end(self) -> None:
        """The answer is written: the connection is idle again."""


class Server:
    """Accepts connections on the Unix socket; each connection carries sequential requests."""

    def __init__(self, config: Config, handler: Handler) -> None:
        self.config = config
        self.handler = handler
        self.invoker = Invoker(
            handler, concurrency=config.concurrency, on_stuck=self.request_restart
        )
        self.draining = False
        self.stopping = asyncio.Event()
        self.exit_code = EXIT_OK
        self._server: asyncio.AbstractServer | None = None
        # connection task -> True while a request is being handled on it
        self._connections: dict[asyncio.Task[None], bool] = {}
        # Sync handlers are served a thread per connection instead (see ThreadedConnections).
        self._threaded: ThreadedConnections | None = None

    async def start(self) -> None:
        os.makedirs(self.config.socket_dir, exist_ok=True)
        _remove_stale_socket(self.config.socket_path)
        if self.handler.kind in (SYNC, GENERATOR):
            self._threaded = ThreadedConnections(self, asyncio.get_running_loop())
            self._threaded.start()
        else:
            self._server = await asyncio.start_unix_server(
                self._on_connection, path=self.config.socket_path, limit=MAX_HEADER_BYTES
            )
        _write_ready_file(self.config.ready_path, self.handler.spec)

    def request_restart(self, reason: str) -> None:
        """A thread is stuck in the handler: finish the other calls, then exit to be restarted."""
        if self.exit_code != EXIT_RESTART:
            log.warning("%s; finishing other calls, then exiting to be restarted", reason)
        self.exit_code = EXIT_RESTART
        self.stopping.set()

    async def drain(self) -> None:
        """Stop accepting, let requests in flight finish, drop idle connections."""
        self.draining = True
        _remove_quietly(self.config.ready_path)
        if self._server is not None:
            self._server.close()
        if self._threaded is not None:
            await self._threaded.drain()
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        _remove_quietly(self.config.socket_path)
        self.invoker.close()

    async def serve_requests(self, peer: Peer) -> None:
        """Answer the requests of one connection in turn, until it closes or the server drains.

        Both engines run this loop. An asyncio connection awaits it; a thread-served one
        drives it with _run_to_end, its reads and writes being blocking calls that never
        suspend the coroutine.
        """
        while not self.draining:
            try:
                request = await read_request(peer.reader)
            except HttpError as exc:
                _, answer = _error(exc.status, "http_error", str(exc))
                peer.write(render_response(exc.status, answer, keep_alive=False))
                await peer.drain()
                return
            if request is None or not peer.begin():
                return
            live = None
            if request.headers.get(FLY_HEADER) == FLY_LIVE:
                live = peer.live_fly(keep_alive=request.keep_alive)
            status, body = await self.dispatch(request, peer.invoke, live)
            if peer.abandoned:
                return  # the watchdog answered this call already
            keep_alive = request.keep_alive and not self.draining
            if live is None or not live.finish(status, body):
                peer.write(render_response(status, body, keep_alive=keep_alive))
            await peer.drain()
            peer.end()
            if not keep_alive:
                return

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self.draining:
            writer.close()
            return
        self._connections[task] = False
        try:
            peer = _StreamPeer(
                reader,
                writer,
                invoke=self.invoker.invoke,
                busy=self._connections,
                task=task,
            )
            await self.serve_requests(peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the peer went away or we are shutting down; nothing to answer
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def dispatch(
        self, request: Request, invoke: Invoke, live: LiveFly | None = None
    ) -> Response:
        """The answer to one request; `invoke` runs the handler, sending FLY events to `live`
        (when given) as they are yielded."""
        path = request.target.split("?", 1)[0]
        if path == "/invoke":
            if request.method != "POST":
                return _error(405, "method_not_allowed", f"{request.method} /invoke: use POST")
            return await self._invoke(request, invoke, live)
        if path == "/healthz":
            if request.method not in ("GET", "HEAD"):
                return _error(405, "method_not_allowed", f"{request.method} /healthz: use GET")
            if self.draining:
                return 503, dump_json({"status": "draining", "handler": self.handler.spec})
            return 200, dump_json({"status": "ok", "handler": self.handler.spec})
        return _error(404, "not_found", f"no route {path!r}; try POST /invoke or GET /healthz")

    async def _invoke(self, request: Request, invoke: Invoke, live: LiveFly | None) -> Response:
        started = time.perf_counter()
        try:
            timeout = _timeout_of(request)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        try:
            envelope = parse_envelope(request.body)
        except ParseError as exc:
            log.warning("rejected request body: %s", exc)
            details = {"type": "ParseError", "message": str(exc)}
            return 400, dump_json({"error": "msg_parsing_error", "details": details})
        envelope_id = envelope.get("id")
        try:
            frames, fly = await invoke(envelope, timeout=timeout, live=live)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # SystemExit from a handler must not stop the server
            return handler_failed(exc, envelope_id)
        if not frames and not fly:
            # Also when every event went out live: the stream's final line then says 204.
            return 204, None
        answer: dict[str, Any] = {"frames": frames}
        if len(frames) == 1 and PARKED in frames[0]:
            answer = {"frames": [], PARKED: frames[0][PARKED]}
        if fly:
            answer["fly"] = fly
        try:
            data = dump_json(answer)
        except (TypeError, ValueError) as exc:
            reason = str(exc)
            if isinstance(exc, ValueError):  # json's words for NaN and Infinity
                reason = f"a float is NaN or infinite ({exc})"
            problem = ResultError(f"handler result is not JSON-serialisable: {reason}")
            log.error("%s", problem, extra={"envelope_id": envelope_id})
            return 500, dump_json({"error": "processing_error", "details": error_details(problem)})
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "invoked",
                extra={
                    "envelope_id": envelope_id,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
        return 200, data


class _StreamPeer:
    """An asyncio connection, for serve_requests; its handler calls run on the event loop."""

    abandoned = False  # only a thread-served call can be given up on

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        invoke: Invoke,
        busy: dict[asyncio.Task[None], bool],
        task: asyncio.Task[None],
    ) -> None:
        self.reader = reader
        self.invoke = invoke
        # The writer's own methods, not wrappers: no extra call on the loop's hot path.
        self.write = writer.write
        self.drain = writer.drain
        self._busy = busy  # Server's connection task -> busy flag, which drain reads
        self._task = task

    def live_fly(self, *, keep_alive: bool) -> LiveFly:
        return _LoopFly(keep_alive=keep_alive, write=self.write, loop=asyncio.get_running_loop())

    def begin(self) -> bool:
        self._busy[self._task] = True
        return True

    def end(self) -> None:
        self._busy[self._task] = False


def handler_failed(exc: BaseException, envelope_id: Any) -> Response:
    """500 processing_error for an exception of the handler (or its timeout), logged."""
    details = error_details(exc)
    log.error(
        "handler raised %s: %s",
        details["type"],
        exc,
        extra={
            "envelope_id": envelope_id,
            "error_type": details["type"],
            "traceback": details["traceback"],
        },
    )
    return 500, dump_json({"error": "processing_error", "details": details})


def _timeout_of(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:  # also refuses NaN
        raise ValueError(f"{TIMEOUT_HEADER}: {raw!r} is not a positive number of seconds")
    return timeout


def _error(status: int, error: str, message: str) -> Response:
    return status, dump_json({"error": error, "details": {"message": message}})


def _remove_stale_socket(path: str) -> None:
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a leftover from a crashed runtime
        return
    finally:
        probe.close()
    raise OSError(f"another runtime is already serving on {path}")


def _write_ready_file(path: str, spec: str) -> None:
    # Written atomically so a probe never sees a half-written file.
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump({"pid": os.getpid(), "handler": spec}, handle)
    os.replace(temporary, path)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ------------------------------------------------------------- sync handlers: a thread each


class _BlockingReader:
    """StreamReader's readuntil/readexactly over a blocking socket, for read_request.

    The methods are coroutines that never suspend, so the same request loop serves both
    kinds of connection; `_run_to_end` drives it in a plain thread.
    """

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._sock = sock
        self._limit = limit
        self._buffer = bytearray()

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            partial = bytes(self._buffer)
            self._buffer.clear()
            raise asyncio.IncompleteReadError(partial, None)
        self._buffer += chunk

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        start = 0
        while True:
            found = self._buffer.find(separator, start)
            if found >= 0:
                end = found + len(separator)
                data = bytes(self._buffer[:end])
                del self._buffer[:end]
                return data
            if len(self._buffer) > self._limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", 0)
            start = max(0, len(self._buffer) - len(separator) + 1)
            self._fill()

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


def _run_to_end(coroutine: Any) -> Any:
    """Run a coroutine that never waits on the event loop, in the calling thread."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a thread-served request tried to wait on the event loop")


class _Connection:
    """A client connection served by its own thread: the Peer of serve_requests."""

    def __init__(
        self, sock: socket.socket, *, lock: threading.Lock, call: Callable[..., Outcome]
    ) -> None:
        self.sock = sock
        self.reader = _BlockingReader(sock, MAX_HEADER_BYTES)
        self.busy = False  # a request is being handled
        self.closing = False  # drain shut it down while idle
        self.abandoned = False  # the watchdog answered a timed-out call; the thread is stuck
        # The watchdog's answer ends a FLY stream and is still being written: the process
        # must not exit (drain must not finish) before that answer is out.
        self.answering = False
        self._lock = lock  # ThreadedConnections' lock, which guards busy and closing
        self._call = call  # ThreadedConnections._call: runs the handler in this thread

    async def invoke(
        self,
        envelope: dict[str, Any],
        *,
        timeout: float | None = None,
        live: LiveFly | None = None,
    ) -> Outcome:
        return self._call(self, envelope, timeout, live)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def live_fly(self, *, keep_alive: bool) -> LiveFly:
        return _ThreadFly(keep_alive=keep_alive, sock=self.sock)

    async def drain(self) -> None:
        pass  # write() has already handed everything to the kernel

    def begin(self) -> bool:
        with self._lock:
            if self.closing:
                return False  # drained while the request arrived; the sidecar retries elsewhere
            self.busy = True
            return True

    def end(self) -> None:
        with self._lock:
            self.busy = False


class _Call:
    """One handler call with a deadline; the watchdog and the handler race to settle it."""

    def __init__(
        self,
        connection: _Connection,
        timeout: float,
        envelope_id: Any,
        live: LiveFly | None,
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.envelope_id = envelope_id
        self.live = live  # the call's FLY stream: a timeout answer must end it, not follow it
        self.lock = threading.Lock()
        self.done = False
        self.timed_out = False


class ThreadedConnections:
    """Serves a sync handler with one thread per connection.

    The thread that reads a request calls the handler itself and writes the answer: no
    hand-off to a pool and back to the event loop, which costs two context switches and a
    wake-up of the loop per call (half of this runtime's CPU for a fast handler). The
    sidecar keeps a connection per envelope in flight, so the threads are as many as its
    concurrency; ASYA_RUNTIME_CONCURRENCY still bounds the calls running at once.

    A call past its timeout cannot be stopped in a thread: the watchdog answers it with
    ActorTimeout, closes that connection, and asks the server to restart once the other
    calls are done, as the pool-based path does.
    """

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._slots = threading.BoundedSemaphore(server.config.concurrency)
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._gone = asyncio.Event()  # set when no connection is left to wait for
        self._listener: socket.socket | None = None
        self._deadlines: list[tuple[float, int, _Call]] = []
        self._deadline_seq = 0
        self._deadline_changed = threading.Condition(self._lock)

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self._server.config.socket_path)
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._loop.add_reader(listener.fileno(), self._accept)
        threading.Thread(target=self._watch_deadlines, name="asya-watchdog", daemon=True).start()

    async def drain(self) -> None:
        """Stop accepting, close idle connections, wait for calls in flight (not stuck ones)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        with self._lock:
            for connection in self._connections:
                if not connection.busy:
                    connection.closing = True
                    _shutdown_quietly(connection.sock)
        self._wake_drain_if_done()
        await self._gone.wait()

    def _wake_drain_if_done(self) -> None:
        """On the loop: let drain() finish once no connection is left to wait for.

        Abandoned connections (a handler stuck past its timeout) are not waited for. Threads
        ask for this check rather than set the event themselves, so that a request to wake
        queued before a new connection arrived cannot end a later drain early.
        """
        with self._lock:
            if all(c.abandoned and not c.answering for c in self._connections):
                self._gone.set()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("cannot accept a connection: %s", exc)
                return
            sock.setblocking(True)
            connection = _Connection(sock, lock=self._lock, call=self._call)
            with self._lock:
                self._connections.add(connection)
                self._gone.clear()
            threading.Thread(
                target=self._serve, args=(connection,), name="asya-handler", daemon=True
            ).start()

    def _serve(self, connection: _Connection) -> None:
        try:
            _run_to_end(self._server.serve_requests(connection))
        except (OSError, asyncio.IncompleteReadError):
            pass  # the peer went away, or drain shut the connection down
        finally:
            with self._lock:
                self._connections.discard(connection)
            self._on_loop(self._wake_drain_if_done)
            connection.sock.close()

    def _call(
        self,
        connection: _Connection,
        envelope: dict[str, Any],
        timeout: float | None,
        live: LiveFly | None,
    ) -> Outcome:
        invoker = self._server.invoker
        if timeout is None:
            with self._slots:
                return invoker.run_here(envelope, self._loop, live)
        # The timeout covers the wait for a free slot too: a slot held by a stuck call must
        # not hold the calls queued behind it (nor a drain waiting for them) forever.
        deadline = time.monotonic() + timeout
        if not self._slots.acquire(timeout=timeout):
            raise ActorTimeout(
                f"{self._server.handler.spec} did not finish within {timeout:g}s "
                f"(it never got one of the {self._server.config.concurrency} call slots)"
            )
        try:
            call = _Call(connection, timeout, envelope.get("id"), live)
            self._watch(call, deadline)
            try:
                return invoker.run_here(envelope, self._loop, live)
            finally:
                with call.lock:
                    call.done = True
        finally:
            self._slots.release()

    # -- the watchdog

    def _watch(self, call: _Call, deadline: float) -> None:
        with self._lock:
            self._deadline_seq += 1
            earliest = not self._deadlines or deadline < self._deadlines[0][0]
            heapq.heappush(self._deadlines, (deadline, self._deadline_seq, call))
            if earliest:  # only then does the watchdog need to wake earlier than planned
                self._deadline_changed.notify()

    def _watch_deadlines(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._deadlines and self._deadlines[0][2].done:
                        heapq.heappop(self._deadlines)  # finished in time
                        continue
                    if self._deadlines and self._deadlines[0][0] <= now:
                        _, _, call = heapq.heappop(self._deadlines)
                        break
                    wait = self._deadlines[0][0] - now if self._deadlines else None
                    self._deadline_changed.wait(wait)
            self._expire(call)

    def _expire(self, call: _Call) -> None:
        with call.lock:
            if call.done:
                return
            call.timed_out = True
            call.connection.abandoned = True
            timed_out = self._server.invoker.timed_out(call.timeout)
            status, body = handler_failed(timed_out, call.envelope_id)
            connection, live = call.connection, call.live
            sock = connection.sock

            def answered() -> None:  # in the stream's writer, once the last chunk is out
                _shutdown_quietly(sock)
                connection.answering = False
                self._on_loop(self._wake_drain_if_done)

            # A call that streams FLY events ends its stream with the timeout; its writer
            # sends it and shuts the connection down, so the watchdog never waits on a peer.
            connection.answering = True
            if not (isinstance(live, _ThreadFly) and live.abandon(status, body, after=answered)):
                connection.answering = False
                with contextlib.suppress(OSError):
                    sock.sendall(render_response(status, body, keep_alive=False))
                _shutdown_quietly(sock)
        self._on_loop(self._wake_drain_if_done)
        self._on_loop(
            self._server.request_restart,
            f"{self._server.handler.spec} kept running past its timeout",
        )

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` on the event loop, from a thread; nothing once the loop is closed."""
        with contextlib.suppress(RuntimeError):  # the server has stopped: nobody to tell
            self._loop.call_soon_threadsafe(callback, *args)


def _shutdown_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------------- main


async def serve(config: Config, handler: Handler) -> int:
    server = Server(config, handler)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot serve on %s: %s", config.socket_path, exc)
        return EXIT_SERVE_FAILED
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stopping.set)
    log.info(
        "serving %s (%s) on %s with concurrency %d",
        handler.spec,
        handler.kind,
        config.socket_path,
        config.concurrency,
        extra={"handler": handler.spec},
    )
    await server.stopping.wait()
    log.info("stopping: finishing requests in flight")
    await server.drain()
    if server.exit_code == EXIT_RESTART:
        log.warning("exiting with code %d so that the runtime is restarted", EXIT_RESTART)
    else:
        log.info("stopped")
    return server.exit_code


def main(environ: dict[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    try:
        config = Config.from_env(env)
    except ConfigError as exc:
        configure_logging(level="INFO", fmt=env.get("ASYA_LOG_FORMAT", "json").lower())
        log.error("invalid configuration: %s", exc)
        return EXIT_BAD_CONFIG
    configure_logging(level=config.log_level, fmt=config.log_format)
    # A ready file left by a runtime that was killed must not announce this one early.
    _remove_quietly(config.ready_path)
    try:
        handler = load_handler(config.handler)
    except HandlerLoadError as exc:
        log.error("cannot load handler: %s", exc, extra={"handler": config.handler})
        return EXIT_BAD_HANDLER
    code = asyncio.run(serve(config, handler))
    if code == EXIT_RESTART:
        # A stuck handler thread would block the interpreter's exit for as long as it runs.
        logging.shutdown()
        os._exit(EXIT_RESTART)
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Already drained: a repeated signal during interpreter exit must not turn 0 into -15.
        signal.signal(signum, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
