"""Reading a request body without holding more than the broker could carry."""

from __future__ import annotations

from starlette.requests import Request

from asya_gateway.service import too_large

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 (ApiError) as soon as it is known to exceed `limit`
    bytes, by its Content-Length or while it streams in: an envelope larger than the
    broker's message limit could not be sent anyway."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit, None)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size, limit, None)
        chunks.append(chunk)
    return b"".join(chunks)
