"""What a join store is: the state x-join keeps for each fan-in while its parts arrive.

A join is one row (keyed by the origin envelope's id) and one row per part. It moves
open -> emitting -> done: `claim_*` hands an open join to exactly one caller under a lease
(emitting), `finish`/`cancel` end it. A done row is a tombstone with no parts and no opener:
it keeps a late duplicate part from starting the join again, until `purge` removes it.

The decisions that do not need the database (URL forms, argument checks, lease arithmetic)
are pure functions here; the backends are thin SQL around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "CURRENT_VERSION",
    "FORMS",
    "Arrival",
    "Claimed",
    "JoinStore",
    "JoinStoreError",
    "Part",
    "StoreKind",
    "check_add",
    "lease_until",
    "parse_url",
    "redact",
]

# The schema version these modules write; a later change adds a step and bumps it.
CURRENT_VERSION = 1
FORMS = (
    "sqlite:///absolute/path.db, sqlite://relative/path.db, "
    "postgresql://user:password@host:5432/database (or postgres://...)"
)
StoreKind = Literal["sqlite", "postgresql"]


class JoinStoreError(Exception):
    """The join store's database failed or refused; the message names the store (URL
    without its password) and the operation."""


@dataclass(frozen=True)
class Arrival:
    """What the store holds for a join after an add."""

    done: bool  # the join already ended: this message is a late duplicate
    arrived: int  # distinct parts stored (ok or failed)
    count: int  # N (the first writer's N wins)
    has_opener: bool


@dataclass(frozen=True)
class Part:
    ok: bool
    data: str  # JSON text: the part's payload (ok) or {"reason","error","actor"} (failed)


@dataclass(frozen=True)
class Claimed:
    origin: str
    count: int
    deadline_us: int
    opener: str | None  # JSON text of the opener envelope, None if it never came
    parts: dict[int, Part]  # index -> part
    claims: int  # how many times this join was claimed (1 the first time)


class JoinStore(Protocol):
    async def open(self) -> None:
        """Connect; create the schema if needed."""

    async def close(self) -> None: ...

    async def add_opener(
        self, origin: str, *, count: int, deadline_us: int, envelope: str
    ) -> Arrival: ...

    async def add_part(
        self, origin: str, *, count: int, deadline_us: int, index: int, part: Part
    ) -> Arrival:
        """Idempotent per (origin, index): the first write wins, duplicates change
        nothing."""

    async def claim_complete(
        self, origin: str, *, owner: str, now_us: int, lease_s: float
    ) -> Claimed | None:
        """Atomically: an open join with its opener and all `count` parts -> emitting
        (owner, lease); or an emitting one whose lease ran out. None otherwise."""

    async def claim_expired(
        self, *, owner: str, now_us: int, lease_s: float, limit: int
    ) -> list[Claimed]:
        """Open joins past deadline_us and emitting ones whose lease ran out, the longest
        overdue first; each claimed by one caller across processes."""

    async def finish(self, origin: str, *, now_us: int) -> None:
        """The joined envelope was published: delete parts and opener, keep a tombstone."""

    async def cancel(self, origin: str, *, now_us: int) -> None:
        """The task was canceled: as finish, for a join never emitted (a join not seen yet
        gets a tombstone too, so its late parts are refused)."""

    async def purge(self, *, before_us: int) -> int:
        """Delete tombstones done before `before_us`; how many."""

    async def held(self) -> tuple[int, int]:
        """(joins not done, part rows): for tests and metrics."""


def parse_url(url: str) -> tuple[StoreKind, str]:
    """Which store a URL names: ("sqlite", file path) or ("postgresql", the URL).

    `sqlite://` is followed by the path as written, so three slashes (or more) make it
    absolute.
    Raises ValueError naming the accepted forms.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("postgresql", "postgres"):
        return "postgresql", url
    if sep and scheme == "sqlite":
        if not rest or rest == ":memory:" or "?" in rest or rest.endswith("/"):
            # An in-memory database would vanish with the process and could not be shared by
            # two x-join processes; a query string would silently become part of the name.
            raise ValueError(
                f"join store URL {url!r} names no database file; accepted forms: {FORMS} "
                "(ASYA_JOIN_STORE)"
            )
        # sqlite:////abs/path.db (the gateway's spelling of an absolute path) means the same
        # file, not "//abs/path.db".
        return "sqlite", "/" + rest.lstrip("/") if rest.startswith("/") else rest
    raise ValueError(
        f"unsupported join store URL {redact(url)!r}; accepted forms: {FORMS} (ASYA_JOIN_STORE)"
    )


def redact(url: str) -> str:
    """`url` with the password between "user:" and "@" replaced by ***."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not (sep and at) or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}"


def check_add(origin: str, *, count: int, index: int | None = None) -> None:
    """Refuse arguments no sidecar would send (a bug upstream, not a database failure)."""
    if not origin:
        raise ValueError("a join needs the origin envelope's id; got an empty origin")
    if count < 0:
        raise ValueError(f"join {origin}: count must be 0 or more, not {count}")
    if index is not None and not 0 <= index < count:
        raise ValueError(
            f"join {origin}: part index {index} is outside 0..{count - 1} (count {count})"
        )


def lease_until(now_us: int, lease_s: float) -> int:
    """When a lease taken at `now_us` for `lease_s` seconds runs out (microseconds)."""
    if lease_s <= 0:
        raise ValueError(f"a claim's lease must be longer than 0 seconds, not {lease_s}")
    return now_us + round(lease_s * 1_000_000)
