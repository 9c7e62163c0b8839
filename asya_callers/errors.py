"""The errors a built-in caller raises, shaped for `spec.resiliency` rules.

The runtime reports an exception with its whole MRO and a rule matches any class in it, so
the tree below lets one rule name a whole family:

    CallerError                   anything a caller raises for a call
    ├── Transient                 worth retrying: the same request may succeed later
    │   ├── RateLimited           HTTP 429; `retry_after` from the server's Retry-After
    │   ├── ServerError           HTTP 5xx, or a success answer we cannot read
    │   ├── Timeout               no answer in time (also a TimeoutError)
    │   └── Unreachable           refused, unresolvable, or cut off (also a ConnectionError)
    └── Permanent                 the same request fails again: never retry it
        ├── BadRequest            HTTP 4xx other than 429 (unknown model, invalid input, auth)
        └── InvalidInput          the payload cannot be made into a request (a missing field)

    ConfigError                   the actor's environment is wrong; raised while the handler
                                  is built, so the runtime exits at start and says why

`retry_after` (seconds) travels in the runtime's error details; the sidecar waits at least
that long before the retry, up to the policy's `maxInterval`.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "CallerError",
    "ConfigError",
    "InvalidInput",
    "Permanent",
    "RateLimited",
    "ServerError",
    "Timeout",
    "Transient",
    "Unreachable",
]


class CallerError(Exception):
    """A call to a model server failed. `status` is the HTTP status, when there was one."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        # Read by the runtime (any exception may carry it): the earliest sensible retry.
        self.retry_after = retry_after


class Transient(CallerError):
    """The same request may well succeed later."""


class Permanent(CallerError):
    """The same request will fail again; retrying only wastes the model server's time."""


class RateLimited(Transient):
    """HTTP 429. `retry_after` holds the server's Retry-After in seconds, when it sent one."""


class ServerError(Transient):
    """HTTP 5xx, or a success answer that is not what the protocol promises."""


class Timeout(Transient, TimeoutError):
    """The server did not answer within the caller's timeout."""


class Unreachable(Transient, ConnectionError):
    """No connection: refused, a name that does not resolve, or cut before the answer."""


class BadRequest(Permanent):
    """HTTP 4xx other than 429: the server refused this request as it is."""


class InvalidInput(Permanent, ValueError):
    """The payload lacks what the caller needs to build a request."""


class ConfigError(ValueError):
    """An environment variable of the actor is missing or malformed."""
