"""Exponential back-off, shared by NATS reconnects and JetStream redeliveries."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    initial_s: float,
    max_s: float,
    *,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait before retry number ``attempt`` (1 for the first retry).

    The wait doubles from ``initial_s`` on each attempt and never exceeds ``max_s``.
    ``jitter`` (0 to 1) shortens each wait by a random part of up to that fraction, so that
    many clients cut off together do not come back in lockstep.

    Args:
        attempt: The retry number; 0 or less means no wait.
        initial_s: The wait before the first retry.
        max_s: The longest wait.
        jitter: The largest fraction taken off a wait at random.
        rand: A source of random numbers in [0, 1), for tests.

    Returns:
        The wait in seconds.
    """
    if attempt <= 0:
        return 0.0
    # min() on the exponent first keeps 2**n from growing without bound.
    delay = min(initial_s * 2.0 ** min(attempt - 1, 62), max_s)
    if jitter:
        delay *= 1.0 - jitter * rand()
    return delay
