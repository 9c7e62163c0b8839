"""A stand-in for a foreign runtime that breaks the protocol: its frames rewrite route.prev or
route.curr, which our own runtime never allows. It lets the tests prove that the sidecar
itself refuses such results. Speaks just enough HTTP/1.1 for the sidecar's client.
"""

import asyncio
import json
import os
import signal

SOCKET_DIR = os.environ["ASYA_SOCKET_DIR"]


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET /healthz"):
                answer = b'{"status": "ok"}'
            else:
                envelope = json.loads(body)
                route = dict(envelope["route"])
                if envelope["payload"].get("forge") == "prev":
                    route["prev"] = ["someone-else"]
                else:
                    route["curr"] = "impostor"
                frame = {"payload": envelope["payload"], "route": route, "headers": {}}
                answer = json.dumps({"frames": [frame]}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main():
    os.makedirs(SOCKET_DIR, exist_ok=True)
    path = os.path.join(SOCKET_DIR, "asya-runtime.sock")
    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.start_unix_server(serve, path=path)
    with open(os.path.join(SOCKET_DIR, "runtime-ready"), "w") as ready:
        ready.write("{}")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


asyncio.run(main())
