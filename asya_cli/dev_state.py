"""What a running `asya dev` tells other commands about itself: `STATE_DIR/dev.json`.

Written once every sidecar is healthy, removed when that `asya dev` stops. It names the
process, its transport and namespace, its gateway, and per actor the sidecar's admin URL and
the pids of its sidecar and runtime, so that `asya ls` finds everything without asking
the user again. The file outlives an `asya dev` that was killed; `read_running` tells a live one
from such a leftover by its pid.

    {"pid": 4242, "transport": "local", "namespace": "default",
     "started_at": "2026-12-07T11:40:00Z", "gateway": "http://127.0.0.1:8080",
     "actors": [{"name": "prep", "crew": false, "concurrency": 1,
                 "metrics_url": "http://127.0.0.1:41234", "pids": [4250, 4244]}, ...]}
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asya_cli.dev_plan import ProcessSpec
from asya_shared import env, names, times

FILE_NAME = "dev.json"


class DevStateError(Exception):
    """No usable state of a running `asya dev`; the message says what to do."""


class DevStateMissing(DevStateError):
    pass


class DevStateStale(DevStateError):
    pass


class DevStateInvalid(DevStateError):
    pass


@dataclass(frozen=True)
class ActorState:
    name: str
    crew: bool
    concurrency: int
    metrics_url: str  # the sidecar's admin server: /metrics and /healthz
    pids: tuple[int, ...]  # sidecar, then runtime, as they were when the file was written


@dataclass(frozen=True)
class DevState:
    pid: int  # the `asya dev` process
    transport: str
    namespace: str
    started_at: str
    gateway: str | None
    actors: tuple[ActorState, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["actors"] = [{**a, "pids": list(a["pids"])} for a in data["actors"]]
        return data


def state_file(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def describe(
    specs: Sequence[ProcessSpec],
    *,
    owner_pid: int,
    transport: str,
    namespace: str,
    started_at: str,
    gateway: str | None,
    pid_of: Callable[[str], int],
) -> DevState:
    """The state of a pipeline planned as `specs` (pure, given `pid_of`, which maps
    `actor/role` to that process's pid). Actors keep the plan's order: the user's first."""
    actors = []
    for spec in specs:
        if spec.role != "sidecar" or spec.health_port is None:
            continue
        host = spec.env.get(env.METRICS_HOST, "127.0.0.1")
        actors.append(
            ActorState(
                name=spec.actor,
                crew=spec.actor in names.RESERVED,
                concurrency=int(spec.env.get(env.CONCURRENCY, "1")),
                metrics_url=f"http://{host}:{spec.health_port}",
                pids=_pids(spec.actor, pid_of),
            )
        )
    return DevState(
        pid=owner_pid,
        transport=transport,
        namespace=namespace,
        started_at=started_at,
        gateway=gateway,
        actors=tuple(actors),
    )


def _pids(actor: str, pid_of: Callable[[str], int]) -> tuple[int, ...]:
    """Sidecar first, then runtime; a role the plan does not run for this actor is left out
    rather than failing the start of the whole pipeline."""
    found = []
    for role in ("sidecar", "runtime"):
        with contextlib.suppress(KeyError):
            found.append(pid_of(f"{actor}/{role}"))
    return tuple(found)


def record(
    state_dir: Path,
    specs: Sequence[ProcessSpec],
    *,
    transport: str,
    namespace: str,
    gateway: str | None,
    pid_of: Callable[[str], int],
) -> DevState:
    """Describe this process's pipeline and write it to `state_dir` (see `write`)."""
    state = describe(
        specs,
        owner_pid=os.getpid(),
        transport=transport,
        namespace=namespace,
        started_at=_now(),
        gateway=gateway,
        pid_of=pid_of,
    )
    write(state_dir, state)
    return state


def write(state_dir: Path, state: DevState) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    target = state_file(state_dir)
    partial = target.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(partial, target)


def remove_if_ours(state_dir: Path, specs: Sequence[ProcessSpec]) -> None:
    """Remove the file if this process wrote it for the pipeline planned as `specs`.

    Another `asya dev` may have started on the same state directory since: its file must
    stay, or `asya ls` would say nothing runs while it does."""
    target = state_file(state_dir)
    try:
        written = parse(target.read_text(), target)
    except (OSError, DevStateInvalid):
        return
    ours = {f"{s.actor}/{s.health_port}" for s in specs if s.role == "sidecar"}
    theirs = {f"{a.name}/{a.metrics_url.rsplit(':', 1)[-1]}" for a in written.actors}
    if written.pid == os.getpid() and ours == theirs:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()


def read(state_dir: Path) -> DevState:
    """The state as written; raises DevStateMissing or DevStateInvalid."""
    target = state_file(state_dir)
    try:
        text = target.read_text()
    except FileNotFoundError:
        raise DevStateMissing(
            f"no `asya dev` running with state dir {state_dir} (no {FILE_NAME} there); "
            "start one, or pass the --state-dir it uses"
        ) from None
    except OSError as exc:
        raise DevStateInvalid(f"cannot read {target}: {exc.strerror}") from None
    return parse(text, target)


def read_running(state_dir: Path) -> DevState:
    """The state of an `asya dev` that is still running; raises DevStateStale for the file
    of one that ended without removing it (killed, or its machine restarted)."""
    state = read(state_dir)
    if not pid_alive(state.pid):
        raise DevStateStale(
            f"the `asya dev` that wrote {state_file(state_dir)} (pid {state.pid}, started "
            f"{state.started_at}) is no longer running; start it again (the file is replaced), "
            "or delete the file"
        )
    return state


def parse(text: str, source: Path) -> DevState:
    """A DevState from the file's text; DevStateInvalid names what is wrong and where."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DevStateInvalid(f"{source} is not valid JSON ({exc}); delete it") from None
    try:
        if not isinstance(data, dict):
            raise TypeError("the top level must be an object")
        gateway = data["gateway"]
        if gateway is not None and not isinstance(gateway, str):
            raise TypeError("gateway must be a URL or null")
        return DevState(
            pid=_int(data["pid"], "pid"),
            transport=_str(data["transport"], "transport"),
            namespace=_str(data["namespace"], "namespace"),
            started_at=_str(data["started_at"], "started_at"),
            gateway=gateway,
            actors=tuple(_actor(item, i) for i, item in enumerate(_list(data["actors"], "actors"))),
        )
    except KeyError as exc:
        raise DevStateInvalid(f"{source}: missing field {exc}; delete it") from None
    except TypeError as exc:
        raise DevStateInvalid(f"{source}: {exc}; delete it") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _actor(item: object, index: int) -> ActorState:
    where = f"actors[{index}]"
    if not isinstance(item, dict):
        raise TypeError(f"{where} must be an object")
    crew = item["crew"]
    if not isinstance(crew, bool):
        raise TypeError(f"{where}.crew must be true or false")
    return ActorState(
        name=_str(item["name"], f"{where}.name"),
        crew=crew,
        concurrency=_int(item["concurrency"], f"{where}.concurrency"),
        metrics_url=_str(item["metrics_url"], f"{where}.metrics_url"),
        pids=tuple(_int(p, f"{where}.pids") for p in _list(item["pids"], f"{where}.pids")),
    )


def _int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{where} must be an integer, not {value!r}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, not {value!r}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise TypeError(f"{where} must be a list, not {value!r}")
    return value


def _now() -> str:
    return times.rfc3339(datetime.datetime.now(datetime.UTC), timespec="seconds")
