"""x-join's sweeper thread: it decides expired joins on its own, and never holds up the exit
of the runtime it lives in."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from asya_crew import join
from asya_crew.joinstore import Part, open_join_store
from asya_shared import joins, names

# Runs in a child process: a sweeper with an interval of an hour, left running when the
# main thread ends, as it is when the runtime returns after SIGTERM.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from asya_crew.join import Emitter, Sweeper, settings_from

    environ = {
        "ASYA_JOIN_STORE": "sqlite:///" + sys.argv[1],
        "ASYA_TRANSPORT": "local",
        "ASYA_NAMESPACE": "t",
        "ASYA_STATE_DIR": sys.argv[2],
    }
    sweeper = Sweeper(Emitter(settings_from(environ), environ), 3600.0)
    sweeper.start()
    deadline = time.monotonic() + 60
    while not Path(sys.argv[1]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("swept" if Path(sys.argv[1]).exists() else "never swept", flush=True)
    """
)


def test_a_runtime_exits_at_once_while_its_sweeper_waits_for_the_next_sweep(
    tmp_path: Path,
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "join.db"), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        # Far less than the sweeper's hour: a wait the interpreter joined at exit would
        # keep the process alive until then.
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "swept"


async def test_a_sweep_decides_a_join_past_its_deadline_and_sends_it_on(
    tmp_path: Path,
) -> None:
    environ = {
        "ASYA_JOIN_STORE": f"sqlite:///{tmp_path / 'join.db'}",
        "ASYA_TRANSPORT": "local",
        "ASYA_NAMESPACE": "t",
        "ASYA_STATE_DIR": str(tmp_path / "state"),
    }
    emitter = join.Emitter(join.settings_from(environ), environ)
    store = await emitter.ready()
    opener = {
        "id": "t1",
        "route": {"prev": ["split", "work"], "curr": names.JOIN, "next": ["combine"]},
        "headers": {
            joins.OPEN_HEADER: {
                "origin": "t1",
                "count": 2,
                "into": "/results",
                "policy": "partial",
                "deadline_at": "2026-01-01T00:00:00Z",
            }
        },
        "status": None,
        "payload": {"doc": "x"},
    }
    await store.add_opener("t1", count=2, deadline_us=1, envelope=json.dumps(opener))
    await store.add_part("t1", count=2, deadline_us=1, index=0, part=Part(True, '"A"'))
    transport = await emitter.transport()
    await transport.ensure_queue(names.queue_name("t", "combine"))
    try:
        assert await emitter.sweep() == 1
        receiver = transport.receive(names.queue_name("t", "combine"), prefetch=1)
        delivery = await receiver.__anext__()
        sent = json.loads(delivery.body)
        await delivery.ack()
        await receiver.aclose()
    finally:
        await emitter.close()
    assert sent["id"] == "t1"
    assert sent["payload"] == {"doc": "x", "results": ["A", None], "missing": [1]}
    check = open_join_store(environ["ASYA_JOIN_STORE"])
    await check.open()
    try:
        assert await check.held() == (0, 0)
    finally:
        await check.close()
