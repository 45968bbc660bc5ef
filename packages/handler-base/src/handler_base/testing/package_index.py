"""A real package index on loopback (pypiserver): what a cluster installs our wheels from.

Anyone may download; uploads need the password (``uv publish`` with the credentials in
its environment, as CI passes its secret). A name the index lacks is not looked up on a
public index (``--disable-fallback``), so an install from it proves the index holds
everything that was installed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from handler_base.testing.ray_fixtures import LOOPBACK, free_port

INDEX_USER = "release-bot"


@dataclass
class LocalIndex:
    """A running index: where to upload, where pip reads, and the folder it serves."""

    port: int
    password: str
    directory: Path

    @property
    def upload_url(self) -> str:
        """The upload API (``uv publish --publish-url``)."""
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def simple_url(self) -> str:
        """The simple API (pip's ``--index-url``)."""
        return f"http://{LOOPBACK}:{self.port}/simple/"


@contextmanager
def package_index(home: Path, password: str = "release-test-password") -> Iterator[LocalIndex]:
    """Run a pypiserver serving ``home/packages`` until the block ends."""
    from passlib.apache import HtpasswdFile  # type: ignore[import-untyped]

    home.mkdir(parents=True, exist_ok=True)
    passwords = HtpasswdFile(str(home / "htpasswd"), new=True)
    passwords.set_password(INDEX_USER, password)
    passwords.save()
    packages = home / "packages"
    packages.mkdir(exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "pypiserver", "run", "-i", LOOPBACK, "-p", str(port)]
    command += ["-a", "update", "-P", str(home / "htpasswd"), "--disable-fallback"]
    with (home / "server.log").open("wb") as log:
        server = subprocess.Popen([*command, str(packages)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError((home / "server.log").read_text())
            try:
                if httpx.get(f"http://{LOOPBACK}:{port}/simple/", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the package index did not start in a minute")
            time.sleep(0.5)
        yield LocalIndex(port=port, password=password, directory=packages)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def build_wheel(project: Path, dest: Path) -> None:
    """Build ``project`` into a wheel in ``dest`` as a release does.

    ``--no-sources``: built against published names, not the workspace.
    """
    from handler_base.testing.cluster import uv

    command = [uv(), "build", "--quiet", "--no-sources", "--wheel", "-o", str(dest), str(project)]
    subprocess.run(command, check=True, timeout=300)


def build_wheels(packages: Path, dest: Path) -> list[Path]:
    """Build every project under ``packages`` into a wheel in ``dest``; the wheels there."""
    for project in sorted(packages.iterdir()):
        if (project / "pyproject.toml").exists():
            build_wheel(project, dest)
    return sorted(dest.glob("*.whl"))
