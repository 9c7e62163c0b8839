"""Echo handlers for benchmarks (imported by the runtime under test)."""


def echo(payload):
    return payload


async def async_echo(payload):
    return payload
