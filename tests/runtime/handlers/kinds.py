"""One echo handler per kind the runtime must accept."""

import asyncio


def echo(payload):
    return payload


async def async_echo(payload):
    await asyncio.sleep(0)
    return payload


def gen_echo(payload):
    yield payload


async def async_gen_echo(payload):
    yield payload


class Model:
    """Counts how often it is built: the runtime must build it exactly once."""

    instances = 0

    def __init__(self):
        Model.instances += 1
        self.calls = 0

    def predict(self, payload):
        self.calls += 1
        return {"instances": Model.instances, "calls": self.calls, "echo": payload}

    async def apredict(self, payload):
        self.calls += 1
        return {"instances": Model.instances, "calls": self.calls}

    def stream(self, payload):
        self.calls += 1
        yield {"instances": Model.instances, "calls": self.calls}

    async def astream(self, payload):
        self.calls += 1
        yield {"instances": Model.instances, "calls": self.calls}


class AsyncCallable:
    async def __call__(self, payload):
        return {"called": True, "echo": payload}


instance = AsyncCallable()


def wrapped_coroutine(payload):
    """A plain function handing back a coroutine, as some decorators make them."""
    return async_echo(payload)


def wrapped_async_generator(payload):
    return async_gen_echo(payload)


def wrapped_generator(payload):
    return gen_echo(payload)
