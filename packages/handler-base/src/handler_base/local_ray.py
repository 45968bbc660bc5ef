"""Ray on one machine: the environment that keeps it on loopback and quiet.

Read by Ray when it starts its processes, so :func:`use_local_ray_env` must run before
``ray.init()``. The test plugin and ``aictl up`` both use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from handler_base.proxy_errors import PROXY_CALLBACK, PROXY_CALLBACK_ENV

LOCAL_RAY_ENV: dict[str, str] = {
    # Ray's single-machine mode: its processes talk over loopback only.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Explicit, so that a later `ray start` or `serve` CLI agrees with this cluster.
    "RAY_AUTH_MODE": "disabled",
    # Under `uv run`, Ray would start every worker with `uv run` in a copy of the working
    # directory (a new environment per worker); workers must use the driver's environment.
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # Serve kills an HTTP proxy that is not ready within 5 s, which a busy 2-core machine
    # can exceed while workers import; give it a minute.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    # The raylet waits 30 s for its agents to register and dies after; loaded 2-core
    # machines were seen to need more.
    "RAY_agent_register_timeout_ms": "180000",
    # Serve's proxy writes some errors itself, as plain text; this middleware answers them
    # in the platform's error shape (the driver's environment can import it).
    PROXY_CALLBACK_ENV: PROXY_CALLBACK,
}


def use_local_ray_env() -> None:
    """Set :data:`LOCAL_RAY_ENV` in this process, keeping values already set."""
    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)


RAY_START_ATTEMPTS = 3
"""Ray gives a new node 30 s to register (hard-coded); a busy machine can miss that."""


def init_local_ray(on_retry: Callable[[str], None] | None = None, **options: Any) -> Any:
    """``ray.init(**options)`` with :data:`LOCAL_RAY_ENV`, retried after a start-up timeout.

    Ray's node can miss its start-up deadline on a busy machine; then Ray is shut down and
    started again, up to :data:`RAY_START_ATTEMPTS` times.

    Args:
        on_retry: Told why, before each new try.
        **options: ``ray.init`` keyword arguments.

    Returns:
        What ``ray.init`` returns (its context: ``dashboard_url``...).
    """
    use_local_ray_env()
    import ray

    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            return ray.init(**options)
        except Exception as exc:
            ray.shutdown()
            if "during startup" not in str(exc) or attempt == RAY_START_ATTEMPTS:
                raise
            if on_retry is not None:
                on_retry(f"Ray took too long to start (a busy machine?): try {attempt + 1}")
    raise AssertionError("unreachable")
