"""Helpers shared by the bench scripts: a local Ray + Serve, timing, summaries, tables.

The scripts run as ``python bench/x.py``, so this folder is on ``sys.path`` and they import
this module as ``_common``. Importing it sets the Ray environment defaults (before any Ray
import of the script); Ray itself is imported only when :func:`local_serve` starts it.

**Attached runs.** With :data:`ATTACH_ENV` set to a Serve URL, :func:`local_serve` starts
nothing and yields that URL: the script runs on the Ray this process is already connected
to, and :func:`deploy_model_app` leaves a model app of the same name that already runs
there in place. ``bench/quick.py`` runs every script's ``--quick`` mode this way, one
after another on one Ray of its own (and ``tests/test_bench_scripts.py`` runs it in CI),
so the scripts cannot rot unseen.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from handler_base.local_ray import use_local_ray_env
from handler_base.testing.ray_fixtures import free_port

__all__ = [
    "ATTACH_ENV",
    "Call",
    "deploy_model_app",
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

ATTACH_ENV = "BENCH_SERVE_URL"
"""Set to a running Serve's HTTP URL: the scripts use that Ray and Serve (see above)."""
_MODEL_APPS: set[str] = set()
"""The names :func:`deploy_model_app` ran, kept when an attached run ends."""

use_local_ray_env()


@contextmanager
def local_serve(num_cpus: int = 2) -> Iterator[str]:
    """A local Ray (loopback, no dashboard) and Serve; yields Serve's HTTP base URL.

    ``num_cpus``: the CPUs Ray schedules replicas on (the machine's 2 by default).
    Shuts Serve and Ray down on exit, also when the body raises. Attached
    (:data:`ATTACH_ENV`): yields the running Serve's URL, and on exit deletes only the
    apps the body added other than model apps (:func:`deploy_model_app`'s are kept).
    """
    attached = os.environ.get(ATTACH_ENV)
    if attached:
        from ray import serve

        before = set(serve.status().applications)
        try:
            yield attached.rstrip("/")
        finally:
            for name in set(serve.status().applications) - before - _MODEL_APPS:
                serve.delete(name)
        return
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


def deploy_model_app(application: Any, name: str) -> None:
    """Run a model ``application`` (its shipped cpu settings) as ``name`` at ``/name``.

    Attached, an app of that name that already runs is kept: it is the shared copy of the
    same model, and deploying again would only reload the model.
    """
    from ray import serve

    _MODEL_APPS.add(name)
    if os.environ.get(ATTACH_ENV):
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            return
    serve.run(application, name=name, route_prefix=f"/{name}")


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
