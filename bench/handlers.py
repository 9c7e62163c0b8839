"""Echo handlers for benchmarks (imported by the runtime under test)."""


def echo(payload):
    return payload


async def async_echo(payload):
    return payload


async def ticker(payload):
    """Yields a side event every `every_s` seconds, `ticks` times: a task that keeps its
    followers busy (bench.watchers)."""
    import asyncio

    for n in range(payload["ticks"]):
        yield "FLY", {"n": n}
        await asyncio.sleep(payload["every_s"])
    yield payload


def split(payload):
    """`n` parts, for the join bench."""
    return [{"i": i} for i in range(payload["n"])]


def double(payload):
    return payload["i"] * 2
