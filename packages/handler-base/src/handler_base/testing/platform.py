"""The whole platform on the current process's Ray and Serve, for soak tests and benchmarks.

:func:`deploy_apps` runs applications described the way :mod:`aictl.apps` describes them
(``name``, ``route_prefix``, ``import_path``, ``args``), so a test deploys exactly what
``aictl up`` deploys, without this package importing the packages above it.
:func:`platform_nats` (from :mod:`handler_base.messaging.server`, where ``aictl up`` takes
it too) is a ``nats-server`` that takes voice replies and can be restarted on the same URL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from handler_base.deployment import build_application
from handler_base.messaging.server import VOICE_MAX_PAYLOAD, platform_nats

__all__ = [
    "VOICE_MAX_PAYLOAD",
    "AppDescription",
    "build_application",
    "delete_apps",
    "deploy_apps",
    "platform_nats",
]


class AppDescription(Protocol):
    """One Serve application, as :class:`aictl.apps.AppSpec` describes it."""

    @property
    def name(self) -> str:
        """The application's name."""

    @property
    def route_prefix(self) -> str:
        """Where the Serve proxy routes its requests."""

    @property
    def import_path(self) -> str:
        """``module:builder``."""

    @property
    def args(self) -> dict[str, Any]:
        """The builder's arguments."""


def deploy_apps(
    apps: Iterable[AppDescription], overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """Run each application on Serve (in order, each healthy before the next); their names.

    Args:
        apps: The applications (models first, as :func:`aictl.apps.applications` lists them).
        overrides: Builder arguments to change, by application name.
    """
    from ray import serve

    names = []
    for app in apps:
        args = {**app.args, **(overrides or {}).get(app.name, {})}
        serve.run(
            build_application(app.import_path, args), name=app.name, route_prefix=app.route_prefix
        )
        names.append(app.name)
    return names


def delete_apps(names: Iterable[str]) -> None:
    """Delete the named Serve applications, the last deployed first."""
    from ray import serve

    for name in reversed(list(names)):
        serve.delete(name)
