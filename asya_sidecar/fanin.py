"""Opening a join when a handler fans out toward an x-join: pure, no I/O.

When the results of one call still have an unclaimed x-join ahead (asya_shared.joins), the
parts are tied to it: every part, part 0 included, gets its own id `<origin>-<i>` (the
origin's id is kept for the joined envelope that x-join will send on), the origin as
parent_id and one more join level in `x-asya-join-part`. One more message, the opener, goes
straight to x-join with the origin's own payload and the route that the joined envelope will
follow; it is what x-join builds the joined envelope from.

A fan-out inside a part that no x-join ahead gathers is refused: its results would all come
to the enclosing x-join under the same index.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asya_shared import joins, names
from asya_sidecar import envelope
from asya_sidecar.envelope import Envelope, Frame, Phase, Route


@dataclass(frozen=True)
class Join:
    """A join the fan-out opens: how to mark each part, and its opener."""

    level: joins.Level  # index -1: each part gets its own
    outer: tuple[joins.Level, ...]
    opener_route: Route
    namespace: str = ""  # where the actors after x-join live ("" : x-join's own)

    def part(self, out: dict[str, Any], index: int) -> dict[str, Any]:
        """Result `index` as forwarded (envelope.forward), made a part of this join."""
        marked = dict(out)
        marked["id"] = f"{self.level.origin}-{index}"
        marked["parent_id"] = self.level.origin
        headers = {k: v for k, v in out["headers"].items() if k != joins.OPTIONS_HEADER}
        level = joins.Level(**{**self.level.to_json(), "index": index})
        headers[joins.PART_HEADER] = [item.to_json() for item in (*self.outer, level)]
        marked["headers"] = headers
        return marked

    def opener(
        self, origin: Envelope, headers: Mapping[str, Any], now: datetime.datetime
    ) -> dict[str, Any]:
        """The message that gives x-join the origin's payload and onward route."""
        out = dict(origin.fields)
        out["route"] = self.opener_route.to_json()
        kept = {k: v for k, v in headers.items() if k != joins.OPTIONS_HEADER}
        kept[joins.OPEN_HEADER] = self.level.opener_header()
        if self.namespace:
            kept[joins.OPEN_HEADER]["namespace"] = self.namespace
        if self.outer:
            kept[joins.PART_HEADER] = [item.to_json() for item in self.outer]
        else:
            kept.pop(joins.PART_HEADER, None)
        out["headers"] = kept
        out["status"] = envelope.status(
            origin.status, phase=Phase.PENDING, actor=names.JOIN, now=now
        )
        out["payload"] = origin.payload
        return out


def plan(
    env: Envelope, frames: Sequence[Frame], *, now: datetime.datetime, ns: str = ""
) -> Join | None:
    """The join these results open, or None. Raises joins.InvalidJoin for results that
    cannot be joined (bad options, too many parts, an ungathered fan-out inside a part)."""
    if not frames:
        return None
    outer = tuple(joins.levels(env.headers))
    first = Route(env.route.prev, env.route.curr, frames[0].next).advanced()
    ahead = () if first.curr == names.SINK else (first.curr, *first.next)
    position = joins.closing_join(ahead, len(outer))
    if position is None:
        if outer and len(frames) > 1:
            raise joins.InvalidJoin(
                f"{env.id!r} is part of the join of {outer[-1].origin!r} and returned "
                f"{len(frames)} results, but no x-join ahead gathers them (route ahead: "
                f"{list(ahead)}); add an x-join for this fan-out before the enclosing one, "
                "or return one result"
            )
        return None
    if len(frames) > joins.MAX_PARTS:
        raise joins.InvalidJoin(
            f"{env.id!r} returned {len(frames)} results toward an x-join, which gathers at "
            f"most {joins.MAX_PARTS}; split the work in stages, or join references"
        )
    options = joins.parse_options(frames[0].headers.get(joins.OPTIONS_HEADER))
    deadline = now + datetime.timedelta(seconds=options.timeout_s)
    level = joins.Level(
        origin=env.id,
        index=-1,
        count=len(frames),
        into=options.into,
        policy=options.policy,
        deadline_at=envelope.timestamp(deadline),
    )
    route = Route((*first.prev, *ahead[:position]), names.JOIN, tuple(ahead[position + 1 :]))
    return Join(level=level, outer=outer, opener_route=route, namespace=ns)
