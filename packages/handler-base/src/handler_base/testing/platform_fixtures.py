"""pytest plugin: the platform's model applications, deployed once for the whole session.

Enable it beside :mod:`handler_base.testing.ray_fixtures` (``pytest_plugins``), and give
a conftest a session fixture ``model_app_descriptions`` that returns the applications
(objects with ``name``, ``route_prefix``, ``import_path`` and ``args``, as
:class:`aictl.apps.AppSpec`): this package imports nothing above it, so the repository's
conftest passes in the cpu profile's model apps.

- ``model_apps``: those applications on the session's Serve, deployed on first use (all
  at once, their models loading side by side) and never deleted before Serve shuts down
  at the end of the session; a :class:`~handler_base.testing.platform.SharedApps`.
  Loading the five models takes minutes on two cores, so every test module that needs
  the standard models uses these. A module that needs a model configured otherwise
  deploys its own copy under another name and route; handler applications (chat, voice)
  stay per module.

After each module that ran while the shared applications were up, a check fails the
module's last test when one of them is gone (deleted by a test that did not own it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from handler_base.testing.platform import AppDescription, SharedApps, deploy_apps
from handler_base.testing.ray_fixtures import LocalServe

_DEPLOYED = pytest.StashKey[SharedApps]()


@pytest.fixture(scope="session")
def model_apps(
    request: pytest.FixtureRequest,
    serve_instance: LocalServe,
    model_app_descriptions: Sequence[AppDescription],
) -> SharedApps:
    """The model applications on the session's Serve, deployed once, shared by every module."""
    deploy_apps(model_app_descriptions, at_once=True)
    shared = SharedApps(
        http_url=serve_instance.http_url,
        apps={app.name: app for app in model_app_descriptions},
    )
    request.session.stash[_DEPLOYED] = shared
    return shared


@pytest.fixture(scope="module", autouse=True)
def _shared_apps_kept(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    shared = request.session.stash.get(_DEPLOYED, None)
    if shared is None:
        return
    missing = shared.missing()
    if missing:
        pytest.fail(
            f"{request.node.name} left the shared Serve apps {missing} deleted: a test module "
            "must not delete or redeploy an app of the model_apps fixture (deploy a copy "
            "under another name instead)"
        )
