"""Lets calls to the runtime run side by side, or one of them alone (see crash_ledger.py).

A call that must run alone waits until no call is in flight; while it waits, no new call
starts (otherwise a busy actor would never let it in), and while it runs, none does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class CallGate:
    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self.in_flight = 0
        self._alone_running = False
        self._alone_waiting = 0
        self._others_waiting = 0

    @property
    def waiting_alone(self) -> int:
        """Calls waiting to run alone (each holds new calls back)."""
        return self._alone_waiting

    @property
    def held_back(self) -> int:
        """Calls waiting because one runs, or waits to run, alone."""
        return self._others_waiting

    @contextlib.asynccontextmanager
    async def call(self, *, alone: bool) -> AsyncIterator[None]:
        async with self._changed:
            if alone:
                self._alone_waiting += 1
                try:
                    await self._changed.wait_for(
                        lambda: self.in_flight == 0 and not self._alone_running
                    )
                except BaseException:
                    self._alone_waiting -= 1
                    self._changed.notify_all()  # the calls held back for it may go
                    raise
                self._alone_waiting -= 1
                self._alone_running = True
            else:
                self._others_waiting += 1
                try:
                    await self._changed.wait_for(
                        lambda: not self._alone_running and self._alone_waiting == 0
                    )
                finally:
                    self._others_waiting -= 1
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                if alone:
                    self._alone_running = False
                self._changed.notify_all()
