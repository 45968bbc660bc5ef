"""Helpers shared by the bench scripts: a local Ray + Serve, timing, summaries, tables.

The scripts run as ``python bench/x.py``, so this folder is on ``sys.path`` and they import
this module as ``_common``. Importing it sets the Ray environment defaults (before any Ray
import of the script); Ray itself is imported only when :func:`local_serve` starts it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from handler_base.local_ray import use_local_ray_env
from handler_base.testing.ray_fixtures import free_port

__all__ = [
    "Call",
    "free_port",
    "http_over_handle",
    "local_serve",
    "markdown_table",
    "ms",
    "percentile",
    "print_result",
    "summarize",
    "timed",
]

Call = Callable[[], Awaitable[Any]]

use_local_ray_env()


@contextmanager
def local_serve(num_cpus: int = 2) -> Iterator[str]:
    """A local Ray (loopback, no dashboard) and Serve; yields Serve's HTTP base URL.

    ``num_cpus``: the CPUs Ray schedules replicas on (the machine's 2 by default).
    Shuts Serve and Ray down on exit, also when the body raises.
    """
    use_local_ray_env()
    import ray
    from ray import serve

    port = free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0-100) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float, digits: int = 1) -> float:
    """Seconds as milliseconds, rounded to ``digits``."""
    return round(seconds * 1000, digits)


def summarize(
    times_s: Sequence[float], *, digits: int = 1, mean: bool = False, median: bool = False
) -> dict[str, float]:
    """``p50_ms`` and ``p99_ms`` (and ``mean_ms`` with ``mean``) of durations in seconds.

    ``median``: p50 is :func:`statistics.median` (the middle pair averaged) rather than
    the nearest rank.
    """
    samples = sorted(t * 1000 for t in times_s)
    p50 = statistics.median(samples) if median else percentile(samples, 50)
    summary = {"p50_ms": round(p50, digits), "p99_ms": round(percentile(samples, 99), digits)}
    if mean:
        summary["mean_ms"] = round(statistics.fmean(samples), digits)
    return summary


def http_over_handle(
    handle: dict[str, Any], http: dict[str, Any], digits: int = 3
) -> dict[str, Any]:
    """Both paths' summaries and the ratio of their p50s (HTTP over handle)."""
    return {
        "handle": handle,
        "http": http,
        "http_over_handle_p50": round(http["p50_ms"] / handle["p50_ms"], digits),
    }


async def timed(call: Call, n: int, warmup: int = 0) -> list[float]:
    """Await ``call`` ``warmup`` times, then ``n`` times in sequence; the seconds of each."""
    for _ in range(warmup):
        await call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


def markdown_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` has an ``r`` for each right-aligned column (``"llr"``)."""
    rules = ["---:" if align[i : i + 1] == "r" else "---" for i in range(len(headers))]
    return "\n".join([_row(headers), "|" + "|".join(rules) + "|", *map(_row, rows)])


def _row(cells: Sequence[Any]) -> str:
    return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"


def print_result(result: dict[str, Any], table: str, *, compact: bool = True) -> None:
    """Print ``result`` as one JSON line (``compact``: no spaces), then ``table``."""
    print(json.dumps(result, separators=(",", ":") if compact else None))
    print(table)
