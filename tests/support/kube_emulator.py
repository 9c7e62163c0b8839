"""kmock's Kubernetes API emulator with what a real API server does and kopf relies on, for
the operator's tests and the fault suite's operator-kill scenario."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import kmock

# kmock keeps its object lookups private (name-mangled); the watch below needs them.
_EMULATOR_PRIVATE = "_KubernetesEmulator"


class VersionedEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with what a real API server does and kopf relies on:

    - a resourceVersion that changes with every write (kopf tells fresh watch events from
      stale ones by it, and its JSON patches test it: a failed test answers 422);
    - lists that say their resourceVersion, and watches that start from it: kmock replays
      every existing object at the start of a watch (kopf then acts on a stale copy) and
      joins the event bus only after that replay (a write in between was lost).
    """

    _version = 0

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        assert isinstance(result, dict)
        result["metadata"]["resourceVersion"] = str(VersionedEmulator._version)
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # start the streamed response
        since = int(request.params.get("resourceVersion") or 0)
        assert request.resource is not None
        bus = self._buses[request.resource]
        get_objs = getattr(self, f"{_EMULATOR_PRIVATE}__get_objs")
        check = getattr(self, f"{_EMULATOR_PRIVATE}__check")
        async with self._lock:  # writers hold it while they change objects and publish
            mark = await bus.mark()
            newer = [
                o.raw
                for o in get_objs(request, strict=False)
                if not o.deleted and int(o.raw["metadata"].get("resourceVersion") or 0) > since
            ]
        try:
            for obj in newer:
                yield {"type": "MODIFIED" if since else "ADDED", "object": obj}
            async for event in bus.stream(since=mark):
                metadata = event.get("object", {}).get("metadata", {})
                where = (request.resource, metadata.get("namespace"), metadata.get("name"))
                if check(request, *where, strict=False):
                    yield event
        finally:
            await bus.unmark(mark)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.action in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
        ):
            VersionedEmulator._version += 1
            version = str(VersionedEmulator._version)
            # In place: the request object itself is frozen, and kmock tracks it by identity.
            data = request.data
            if isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        try:
            result = await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:
            # What an API server answers when a patch's `test` op fails (kmock says 500).
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
        if (
            request.action == kmock.action.DELETE
            and request.resource is not None
            and request.name is not None
        ):
            await self._mark_deletion((request.resource, request.namespace, request.name))
        return result

    async def _mark_deletion(self, key: tuple[kmock.resource, str | None, str]) -> None:
        """A DELETE of an object with finalizers only sets its deletionTimestamp, and a real
        API server gives that write a new resourceVersion; kmock keeps the old one, so a
        watch started just after it (replaying only newer objects) never saw the deletion."""
        async with self._lock:
            objects = self._objects
            if key in objects and not objects[key].deleted:
                VersionedEmulator._version += 1
                version = str(VersionedEmulator._version)
                objects[key].patch({"metadata": {"resourceVersion": version}})
