"""The fault scenarios, in the order docs/reliability.md lists them.

Each is a coroutine taking a Context and returning an Outcome whose `passed` says whether the
scenario's own bounds held, with sizes per profile: `short` (CI, every broker, seconds),
`default` (minutes) and `long` (the published figures).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from faults.brokers import TRANSPORTS
from faults.harness import Context, Sizes
from faults.outcome import Outcome

PROFILES = ("short", "default", "long")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context], Awaitable[Outcome]]
    sizes: Mapping[str, Sizes]  # per profile
    transports: tuple[str, ...] = TRANSPORTS  # where the scenario means something


# In docs/reliability.md's order.
MODULES = (
    "process_kills", "broker_restart", "poison", "slow_handler", "network", "gateway_kill",
    "crew_restart", "operator_kill",
)  # fmt: skip


def registry() -> dict[str, Scenario]:
    found: dict[str, Scenario] = {}
    for name in MODULES:
        module = importlib.import_module(f"faults.scenarios.{name}")
        for scenario in module.SCENARIOS:
            found[scenario.name] = scenario
    return found
