"""A multi-node Ray cluster on this machine, every node a process group of its own.

Each node is :mod:`handler_base.testing.ray_node` run by the Python of the node's own
environment (a bare one with Ray only, or the workspace's), so a node's workers import
what that environment holds, as on a cluster where each node has its image. Everything
stays on 127.0.0.1. Killing a node's process group ends it at once, as a machine that
dies would::

    with LocalCluster(tmp_path) as cluster:
        head = cluster.start_head(python, resources={"head": 1})
        worker = cluster.add_worker(sys.executable, resources={"worker": 1})
        ...  # cluster.dashboard_url: Serve's REST API
        worker.kill()
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from handler_base.local_ray import LOCAL_RAY_ENV
from handler_base.proxy_errors import PROXY_CALLBACK, PROXY_CALLBACK_ENV
from handler_base.testing.ray_fixtures import free_port

NODE_SCRIPT = Path(__file__).with_name("ray_node.py")
START_TIMEOUT_S = 180.0


@dataclass
class RayNode:
    """One node: its launcher process (leader of the node's process group) and Ray id."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    node_id: str = ""
    gcs_address: str = ""
    dashboard_url: str | None = None

    @property
    def alive(self) -> bool:
        """True while the launcher runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """End the node at once: every process of its group gets SIGKILL."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the node's processes in order; kill them when that takes too long."""
        if not self.alive:
            return
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_s)
        # Whatever the launcher left behind (workers mid-exit) goes with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class LocalCluster:
    """Start, kill and stop the nodes of one cluster; see the module docstring.

    Attributes:
        workdir: Logs and Ray's temp folder.
        env: Environment of every node (and so of every worker) on top of this process's.
    """

    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    head: RayNode | None = None
    workers: list[RayNode] = field(default_factory=list)
    _temp_dirs: list[str] = field(default_factory=list)

    @property
    def gcs_address(self) -> str:
        """``127.0.0.1:PORT`` of the head's GCS."""
        assert self.head is not None, "start the head first"
        return self.head.gcs_address

    @property
    def dashboard_url(self) -> str:
        """The head's dashboard (Serve's REST API, Ray's state API)."""
        if self.head is None or self.head.dashboard_url is None:
            raise RuntimeError("start the head first")
        return self.head.dashboard_url

    def start_head(
        self,
        python: str,
        *,
        resources: Mapping[str, float] | None = None,
        num_cpus: float = 1,
        env: Mapping[str, str] | None = None,
    ) -> RayNode:
        """Start the head node with ``python``'s environment; wait until it is up."""
        args = ["--head", "--port", str(free_port()), "--dashboard-port", str(free_port())]
        self.head = self._start("head", python, args, resources, num_cpus, env)
        return self.head

    def add_worker(
        self,
        python: str,
        name: str,
        *,
        resources: Mapping[str, float] | None = None,
        num_cpus: float = 1,
        env: Mapping[str, str] | None = None,
    ) -> RayNode:
        """Join a worker node run by ``python``; wait until it is up."""
        node = self._start(name, python, ["--address", self.gcs_address], resources, num_cpus, env)
        self.workers.append(node)
        return node

    def _start(
        self,
        name: str,
        python: str,
        args: list[str],
        resources: Mapping[str, float] | None,
        num_cpus: float,
        env: Mapping[str, str] | None,
    ) -> RayNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{name}.log"
        # A temp folder per node, as on separate machines: the nodes' runtime environments
        # (made under it) must not collide. Short: Ray's socket paths stay under 108 bytes.
        temp_dir = tempfile.mkdtemp(prefix="ray-")
        self._temp_dirs.append(temp_dir)
        command = [python, "-P", str(NODE_SCRIPT), *args, "--name", name, "--temp-dir", temp_dir]
        command += ["--num-cpus", str(num_cpus), "--resources", json.dumps(dict(resources or {}))]
        environment = {**os.environ, **LOCAL_RAY_ENV, **self.env, **(env or {})}
        if not _imports(python, PROXY_CALLBACK.split(":")[0]):
            # As on Ray's stock images: a proxy told to load a hook it cannot import
            # would not start, so this node's proxy writes its own errors as Serve does.
            environment.pop(PROXY_CALLBACK_ENV, None)
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        node = RayNode(name=name, process=process, log=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith('{"node_id"'):
                    found = json.loads(line)
                    node.node_id = found["node_id"]
                    node.gcs_address = found["gcs_address"]
                    node.dashboard_url = found["dashboard_url"]
                    return node
            if not node.alive or time.monotonic() > deadline:
                node.stop(timeout_s=10)
                raise RuntimeError(f"the Ray node {name} did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every node, workers first."""
        for node in [*self.workers, *([self.head] if self.head else [])]:
            node.stop()
        for temp_dir in self._temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
        self._temp_dirs.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def uv() -> str:
    """The uv next to this Python (the workspace's), else the one on PATH."""
    found = Path(sys.executable).parent / "uv"
    return str(found) if found.exists() else shutil.which("uv") or "uv"


@functools.cache
def _imports(python: str, module: str) -> bool:
    """Whether ``python`` can import ``module``."""
    done = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, timeout=120, check=False
    )
    return done.returncode == 0


def bare_ray_environment(path: Path, pins: Path) -> str:
    """A virtual environment at ``path`` with Ray Serve (at the pinned versions) only.

    A node image's environment: nothing of ours, none of our dependencies but Ray's.

    Args:
        path: Where the environment goes.
        pins: A pin list (``requirements.lock.txt``) whose versions Ray and its
            dependencies take.

    Returns:
        The environment's Python.
    """
    subprocess.run(
        [uv(), "venv", "--quiet", "--seed", "--python", sys.executable, str(path)],
        check=True,
        timeout=300,
    )
    python = str(path / "bin" / "python")
    constraints = path / "constraints.txt"
    lines = pins.read_text().splitlines()
    constraints.write_text("\n".join(line for line in lines if not line.startswith("-e ")))
    subprocess.run(
        [
            uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "-c",
            str(constraints),
            "ray[serve]",
        ],
        check=True,
        timeout=900,
    )
    return python
