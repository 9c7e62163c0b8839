"""The one error shape of the gateway's HTTP answers: `{"error": {"code", "message"}}`.

`code` is a stable, machine-readable word (clients branch on it); `message` is for a person
and says what was wrong and what to do. Code that decides an answer raises `ApiError`; the
apps turn it into a response in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

__all__ = [
    "ApiError",
    "error_body",
    "error_response",
]


class ApiError(Exception):
    """An answer other than success: HTTP status, error code, message (and extra headers)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        # The JSON path of the payload value at fault ("$.name"), when one is: front doors
        # with a field of their own for it (OpenAI's `param`) fill it from here.
        self.path = path

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, headers=self.headers)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)
