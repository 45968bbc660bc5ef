"""The model time a replica reports: the model call alone, timed in its worker thread.

Each model deployment runs its model in a one-thread executor. Timing inside that thread
leaves out the wait for the thread (the queue in front of the model), the request's
validation and the answer's serialization. The deployments put the figure on their
answers (``model_time_ms``) and in the ``X-Model-Time-Ms`` header of their HTTP routes
(see :class:`handler_base.inference.ModelTimed`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


def _timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, (time.perf_counter() - start) * 1000


async def run_timed(executor: Executor, function: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``function(*args)`` in ``executor``, and the milliseconds it ran there."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, _timed, function, *args)
