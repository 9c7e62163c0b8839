"""Handlers whose return values exercise the result contract."""


def fan_out(payload):
    return [{"part": i} for i in range(payload["n"])]


def nothing(payload):
    return None


def empty_list(payload):
    return []


def scalar(payload):
    return 42


def not_json(payload):
    return {"tags": {"a", "b"}}


def not_finite(payload):
    return {"score": float("nan")}


def gen_nothing(payload):
    yield from ()


def gen_returns_value(payload):
    yield {"first": True}
    return {"lost": True}
