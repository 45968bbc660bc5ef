"""Ray on one machine: the environment that keeps it on loopback and quiet.

Read by Ray when it starts its processes, so :func:`use_local_ray_env` must run before
``ray.init()``. The test plugin and ``aictl up`` both use it.
"""

from __future__ import annotations

import os

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
}


def use_local_ray_env() -> None:
    """Set :data:`LOCAL_RAY_ENV` in this process, keeping values already set."""
    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)
