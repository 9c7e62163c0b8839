"""A small interpreter over the generator ABI, so tests can be tables of operations.

payload = {"ops": [[verb, args...], ...]} where verb is GET, SET, DEL, FLY or EMIT.
GET results are collected and included in every emitted payload as "got".
"""


def _run(ops):
    got = []
    for op in ops:
        verb, args = op[0], op[1:]
        if verb == "EMIT":
            yield {"emitted": args[0], "got": list(got)}
        elif verb == "GET":
            got.append((yield ("GET", args[0])))
        elif verb == "RAW":
            yield tuple(args[0])
        else:
            yield (verb, *tuple(args))


def sync_script(payload):
    gen = _run(payload["ops"])
    reply = None
    try:
        while True:
            item = gen.send(reply)
            reply = yield item
    except StopIteration:
        return


async def async_script(payload):
    gen = _run(payload["ops"])
    reply = None
    try:
        while True:
            item = gen.send(reply)
            reply = yield item
    except StopIteration:
        return
