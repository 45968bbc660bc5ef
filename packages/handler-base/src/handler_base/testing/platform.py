"""The whole platform on the current process's Ray and Serve, for tests and benchmarks.

:func:`deploy_apps` runs applications described the way :mod:`aictl.apps` describes them
(``name``, ``route_prefix``, ``import_path``, ``args``), so a test deploys exactly what
``aictl up`` deploys, without this package importing the packages above it.
:class:`SharedApps` are applications deployed once and shared by many test modules (the
``model_apps`` fixture of :mod:`handler_base.testing.platform_fixtures`).
:func:`platform_nats` (from :mod:`handler_base.messaging.server`, where ``aictl up`` takes
it too) is a ``nats-server`` that takes voice replies and can be restarted on the same URL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
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
    apps: Iterable[AppDescription],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    at_once: bool = False,
) -> list[str]:
    """Run each application on Serve (in order, each healthy before the next); their names.

    Args:
        apps: The applications (models first, as :func:`aictl.apps.applications` lists them).
        overrides: Builder arguments to change, by application name.
        at_once: Start them all together and wait until every one runs: their replicas
            load side by side. Only for applications that need none of the others to
            start (the model apps).
    """
    from ray import serve

    targets = [
        serve.RunTarget(
            build_application(app.import_path, {**app.args, **(overrides or {}).get(app.name, {})}),
            name=app.name,
            route_prefix=app.route_prefix,
        )
        for app in apps
    ]
    if at_once and targets:
        serve.run_many(targets)
    elif not at_once:
        for target in targets:
            serve.run(target.target, name=target.name, route_prefix=target.route_prefix)
    return [target.name for target in targets]


def delete_apps(names: Iterable[str]) -> None:
    """Delete the named Serve applications, the last deployed first."""
    from ray import serve

    for name in reversed(list(names)):
        serve.delete(name)


@dataclass(frozen=True)
class SharedApps:
    """Applications running on the session's Serve for every test module that needs them.

    Nothing deletes or redeploys them during the session (a module that needs another
    configuration of a model deploys it under a name of its own), so each model loads once.

    Attributes:
        http_url: The Serve proxy's base URL, without a trailing slash.
        apps: The deployed applications, by name.
    """

    http_url: str
    apps: Mapping[str, AppDescription]

    def url(self, name: str) -> str:
        """The HTTP base URL of application ``name`` (``http://HOST:PORT/PREFIX``)."""
        return self.http_url + self.apps[name].route_prefix.rstrip("/")

    def args(self, name: str) -> dict[str, Any]:
        """The builder arguments application ``name`` was deployed with."""
        return dict(self.apps[name].args)

    @contextlib.contextmanager
    def stopped(self, name: str) -> Iterator[None]:
        """Application ``name`` deleted for the ``with`` block, then deployed again as it was.

        For a test of what the platform does when a model goes away. Its model loads
        again afterwards, so keep this for the few tests that need it.
        """
        from ray import serve

        serve.delete(name)
        try:
            yield
        finally:
            deploy_apps([self.apps[name]])

    def missing(self) -> list[str]:
        """The applications that are gone or going (a test deleted what it did not own)."""
        from ray import serve

        there = serve.status().applications
        return [name for name in self.apps if name not in there or there[name].status == "DELETING"]
