"""Handlers that raise, with a small exception hierarchy to check the reported MRO."""


class ProviderError(Exception):
    pass


class QuotaError(ProviderError):
    pass


def quota(payload):
    raise QuotaError("quota exceeded for model {}".format(payload.get("model")))


async def async_value_error(payload):
    raise ValueError("bad value {!r}".format(payload.get("value")))


def gen_fails_after_yield(payload):
    yield {"partial": True}
    raise RuntimeError("broke halfway")


def exits(payload):
    raise SystemExit(3)


class Throttled(ProviderError):
    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = retry_after


def throttled(payload):
    raise Throttled("slow down", payload["retry_after"])
