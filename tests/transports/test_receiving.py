"""The receiving machinery's pure parts. Its behaviour on real brokers is the contract suite's
(contract.py), which every broker's test module runs."""

from __future__ import annotations

import pytest

from asya_transports import receiving


@pytest.mark.parametrize(
    ("attempt", "rand", "pause"),
    [
        (0, 0.5, 0.25),  # half of the initial 0.5 s
        (1, 0.5, 0.5),
        (3, 1.0, 4.0),
        (6, 1.0, 30.0),  # 32 s, capped
        (10_000, 0.999, 29.97),  # the exponent is bounded too: no overflow
        (4, 0.0, 0.0),  # full jitter reaches zero
    ],
)
def test_backoff_is_capped_exponential_with_full_jitter(
    attempt: int, rand: float, pause: float
) -> None:
    delay = receiving.backoff_delay(attempt, initial=0.5, cap=30.0, rand=rand)

    assert delay == pytest.approx(pause)


def test_a_backoff_setting_gives_the_same_pauses() -> None:
    backoff = receiving.Backoff(initial=0.1, cap=5.0)

    pauses = [backoff.delay(attempt, rand=1.0) for attempt in range(8)]

    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
