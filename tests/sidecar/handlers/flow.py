"""Handlers for the sidecar integration tests (run by the real runtime in `asya dev` style)."""

import asyncio
import time


def step(payload):
    """Appends the actor's mark so a test can see the path the payload took."""
    return {**payload, "trail": [*payload.get("trail", []), payload.get("mark", "step")]}


def mark_a(payload):
    return {**payload, "trail": [*payload.get("trail", []), "a"]}


def mark_b(payload):
    return {**payload, "trail": [*payload.get("trail", []), "b"]}


def mark_c(payload):
    return {**payload, "trail": [*payload.get("trail", []), "c"]}


def router(payload):
    """Rewrites the route: a detour is inserted before the rest, or the rest is dropped."""
    if payload.get("detour"):
        yield "SET", ".route.next[:0]", ["b"]
    if payload.get("stop_here"):
        yield "SET", ".route.next", []
    if payload.get("bad_next"):
        yield "SET", ".route.next", ["Not_An_Actor"]
    if payload.get("ghost_next"):
        yield "SET", ".route.next", ["ghost"]
    tenant = yield "GET", ".headers.x-tenant"
    yield "SET", ".headers.seen-tenant", tenant
    yield {**payload, "trail": [*payload.get("trail", []), "router"]}


def split(payload):
    return [{"part": i, "of": payload["n"]} for i in range(payload["n"])]


def nothing(payload):
    return None


class BadInput(ValueError):
    pass


def boom(payload):
    raise BadInput(f"cannot handle {payload!r}")


async def hold(payload):
    started = time.monotonic()
    await asyncio.sleep(payload.get("hold_s", 0.3))
    return {**payload, "start": started, "end": time.monotonic()}


def echo(payload):
    return payload


async def hold_marked(payload):
    """Like hold, but first leaves a file behind so a test knows the call has started."""
    with open(payload["started"], "a") as marker:
        marker.write("started\n")
    await asyncio.sleep(payload.get("hold_s", 0.3))
    return payload


def pause(payload):
    """A little work per envelope, so that a backlog takes a few seconds to drain."""
    time.sleep(0.01)
    return payload


def progress(payload):
    """Streams side events while it works, then emits its result."""
    for step in range(3):
        yield "FLY", {"progress": (step + 1) / 3}
    yield payload


class Flaky(RuntimeError):
    pass


class WorseInput(BadInput):
    """A subclass: rules naming BadInput must match it through the MRO."""


def _record_call(payload, attempt):
    with open(payload["calls"], "a") as calls:
        calls.write(f"{attempt}\n")


def flaky(payload):
    """Fails until its attempt number passes payload["fail_times"]."""
    attempt = yield "GET", ".status.attempt"
    _record_call(payload, attempt)
    if (attempt or 1) <= payload["fail_times"]:
        raise Flaky(f"failing attempt {attempt}")
    yield {**payload, "succeeded_on": attempt}


def always_fails(payload):
    attempt = yield "GET", ".status.attempt"
    _record_call(payload, attempt)
    raise BadInput("never works")
    yield  # unreachable: keeps this a generator handler


def worse(payload):
    raise WorseInput("worse than bad")


def fallback(payload):
    return {**payload, "trail": [*payload.get("trail", []), "fallback"]}


async def sleepy(payload):
    await asyncio.sleep(payload["sleep_s"])
    return payload


def sleepy_sync(payload):
    time.sleep(payload["sleep_s"])
    return payload


def must_not_run(payload):
    with open(payload["ran"], "w") as ran:
        ran.write("ran")
    return payload


def speak(payload):
    """Streams its answer word by word as token side events, as an LLM caller does, then
    answers it as `completion`: the words of `query`, or of the last chat message."""
    text = payload.get("query") or payload["messages"][-1]["content"]
    words = [word + " " for word in text.split()]
    for word in words:
        yield "FLY", {"type": "token", "text": word}
    yield {**payload, "completion": "".join(words)}
