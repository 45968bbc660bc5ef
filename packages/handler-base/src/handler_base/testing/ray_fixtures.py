"""pytest plugin: one real local Ray cluster, with Serve, for the whole test session.

Enable it with ``pytest_plugins = ["handler_base.testing.ray_fixtures"]`` in a
``conftest.py``. Starting Ray takes several seconds on two cores, so the cluster is
started once, on first use, and shut down at the end of the session:

- ``ray_cluster``: ``ray.init()`` on loopback, 2 CPUs, no dashboard.
- ``serve_instance``: Serve on that cluster, its HTTP proxy on ``127.0.0.1`` and a free
  port (``serve_instance.http_url``).

Deployments made in tests should ask for a fraction of a CPU (``num_cpus=0.1``): with
two cores, whole-CPU replicas soon stop scheduling. Test modules whose deployments or
tasks are defined in the test file itself should call :func:`pickle_by_value` with their
module, since the Ray workers cannot import test files by name.

Importing this plugin sets Ray's loopback-only single-machine mode and turns usage
stats off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``RAY_USAGE_STATS_ENABLED=0``), sets
``RAY_AUTH_MODE=disabled``, and keeps the workers on the test's own interpreter
(``RAY_ENABLE_UV_RUN_RUNTIME_ENV=0``), and gives Serve's HTTP proxy a minute to start
(``RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=60``), unless these variables are set already.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import pytest

from handler_base.local_ray import init_local_ray, use_local_ray_env

LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 256 * 1024**2
"""Object store of the test cluster: small, tests move little data."""

use_local_ray_env()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def pickle_by_value(module: ModuleType) -> None:
    """Ship the classes and functions of ``module`` to Ray workers by value.

    Ray pickles what a test file defines by reference to its module, which the workers
    cannot import (pytest's importlib mode gives test files names that are not on any
    path). Call as ``pickle_by_value(sys.modules[__name__])`` at the top of the test.
    """
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class LocalRay:
    """The session's Ray cluster.

    Attributes:
        gcs_address: Address of the cluster's GCS (``127.0.0.1:PORT``).
    """

    gcs_address: str


@dataclass(frozen=True)
class LocalServe:
    """Serve on the session's Ray cluster.

    Attributes:
        host: Where the HTTP proxy listens.
        port: The HTTP proxy's port.
    """

    host: str
    port: int

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP proxy, without a trailing slash."""
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalRay]:
    """Start a local Ray cluster on loopback for the session; shut it down after."""
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in the test process")
    init_local_ray(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address=LOOPBACK,
        object_store_memory=OBJECT_STORE_BYTES,
        configure_logging=False,
    )
    try:
        yield LocalRay(gcs_address=ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def serve_instance(ray_cluster: LocalRay) -> Iterator[LocalServe]:
    """Start Serve on the session's cluster, HTTP proxy on a free loopback port."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": LOOPBACK, "port": port})
    try:
        yield LocalServe(host=LOOPBACK, port=port)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
