"""Serve's REST API on the Ray dashboard: what ``serve deploy`` and ``serve status`` use.

``aictl up`` applies the rendered Serve config through it (so what runs is the document a
RayService would carry) and follows the applications until they run; ``aictl status``
reads it from another shell.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

APPLICATIONS_ROUTE = "/api/serve/applications/"
NODES_ROUTE = "/api/v0/nodes"


class ReplicaState(BaseModel):
    """One replica of a deployment."""

    model_config = ConfigDict(extra="ignore")

    state: str
    pid: int | None = None
    node_id: str | None = None
    actor_id: str | None = None
    """The replica's Ray actor: a new one each time Serve restarts or replaces it."""


class DeploymentState(BaseModel):
    """One deployment of an application, as Serve reports it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    status: str
    message: str = ""
    target_num_replicas: int = 0
    replicas: list[ReplicaState] = Field(default_factory=list)

    def describe_replicas(self) -> str:
        """e.g. ``1/2 running, 1 starting``: running of wanted, then the others by state."""
        counts = Counter(replica.state for replica in self.replicas)
        running = counts.pop("RUNNING", 0)
        others = "".join(f", {count} {state.lower()}" for state, count in sorted(counts.items()))
        return f"{running}/{self.target_num_replicas} running{others}"


class ApplicationState(BaseModel):
    """One application, as Serve reports it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    status: str
    message: str = ""
    route_prefix: str | None = None
    deployments: list[DeploymentState] = Field(default_factory=list)

    @property
    def is_running(self) -> bool:
        """True once every deployment serves."""
        return self.status == "RUNNING"

    @property
    def has_failed(self) -> bool:
        """True when Serve gave up deploying it (it retries some failures by itself)."""
        return self.status in ("DEPLOY_FAILED", "UNHEALTHY")

    def failure(self) -> str:
        """Why it failed: the application's message and each failed deployment's reason.

        A deployment's reason is its constructor's error, or pip's output when its
        packages did not install.
        """
        reasons = [self.message] if self.message else []
        reasons += [
            f"{deployment.name}: {deployment.message}"
            for deployment in self.deployments
            if deployment.status in ("DEPLOY_FAILED", "UNHEALTHY") and deployment.message
        ]
        return "; ".join(reasons) or self.status


class ServeApi:
    """A client of Serve's REST API at ``dashboard_url``."""

    def __init__(self, dashboard_url: str, timeout_s: float = 30.0) -> None:
        """Make the client; nothing is connected until the first call."""
        self.dashboard_url = dashboard_url.rstrip("/")
        self._client = httpx.Client(base_url=self.dashboard_url, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def deploy(self, config: Mapping[str, Any]) -> None:
        """Apply a Serve config (every application in it; others are removed).

        Raises:
            RuntimeError: Serve refused the config; the message is Serve's.
        """
        response = self._client.put(APPLICATIONS_ROUTE, json=dict(config))
        if response.status_code != 200:
            raise RuntimeError(f"Serve refused the config: {response.text.strip()}")

    def applications(self) -> list[ApplicationState]:
        """The applications and their deployments, in Serve's order."""
        response = self._client.get(APPLICATIONS_ROUTE)
        response.raise_for_status()
        found = response.json().get("applications") or {}
        states = []
        for name, app in found.items():
            deployments = [
                DeploymentState.model_validate({**dep, "name": dep_name})
                for dep_name, dep in (app.get("deployments") or {}).items()
            ]
            states.append(
                ApplicationState(
                    name=name,
                    status=app.get("status", "UNKNOWN"),
                    message=app.get("message") or "",
                    # Serve fills route_prefix in once the app runs; the config has it at once.
                    route_prefix=app.get("route_prefix")
                    or (app.get("deployed_app_config") or {}).get("route_prefix"),
                    deployments=deployments,
                )
            )
        return states

    def running_config(self) -> dict[str, Any]:
        """The Serve config that runs now: every application as it was applied.

        Applying it again changes nothing; applying it with one application's arguments
        changed redeploys that application only.

        Raises:
            RuntimeError: An application was deployed without a config (``serve.run``).
        """
        response = self._client.get(APPLICATIONS_ROUTE)
        response.raise_for_status()
        found = response.json()
        applications = []
        for name, app in (found.get("applications") or {}).items():
            config = app.get("deployed_app_config")
            if config is None:
                raise RuntimeError(
                    f"application {name!r} was not deployed from a Serve config, so its "
                    "config cannot be read back"
                )
            applications.append(config)
        http = found.get("http_options") or {}
        return {
            "proxy_location": found.get("proxy_location"),
            "http_options": {"host": http.get("host"), "port": http.get("port")},
            "applications": applications,
        }

    def node_resources(self) -> list[dict[str, float]]:
        """The total resources of each live node of the cluster (Ray's state API)."""
        response = self._client.get(NODES_ROUTE, params={"limit": 10000, "detail": "true"})
        response.raise_for_status()
        nodes = (response.json().get("data") or {}).get("result") or {}
        return [
            {name: float(amount) for name, amount in (node.get("resources_total") or {}).items()}
            for node in nodes.get("result", [])
            if node.get("state") == "ALIVE"
        ]

    def shutdown(self) -> None:
        """Delete every application and stop Serve."""
        self._client.delete(APPLICATIONS_ROUTE).raise_for_status()


def summarize(states: list[ApplicationState]) -> str:
    """e.g. ``5 running, 2 deploying`` over all applications."""
    counts = Counter(state.status.lower() for state in states)
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))


def placement_resources(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """The custom resources a Serve config's applications ask for, and which apps ask.

    The renderer places replicas through the builders' ``resources`` argument (see
    ``aictl.apps``), so it is read from each application's ``args``.
    """
    wanted: dict[str, list[str]] = {}
    for entry in config.get("applications", []):
        for name in (entry.get("args") or {}).get("resources") or {}:
            wanted.setdefault(name, []).append(entry["name"])
    return wanted


def missing_placement(config: Mapping[str, Any], nodes: list[dict[str, float]]) -> str | None:
    """Why the config's replicas could never be placed on these nodes, or None.

    A replica that asks for a custom resource no node offers waits for ever (Serve
    reports it as slow to schedule); this says which resource and how to offer it.
    """
    offered = {name for node in nodes for name, amount in node.items() if amount > 0}
    problems = [
        f"no node offers the resource '{name}' that {', '.join(apps)} ask for "
        f"(start that node with `ray start ... --resources '{{\"{name}\": 1}}'`; the "
        "rendered RayService's rayStartParams do this)"
        for name, apps in placement_resources(config).items()
        if name not in offered
    ]
    return "; ".join(problems) or None


def deploy_and_wait(
    api: ServeApi,
    config: Mapping[str, Any],
    on_progress: Callable[[list[ApplicationState]], None],
    timeout_s: float,
    poll_s: float = 1.0,
) -> list[ApplicationState]:
    """Apply ``config`` and follow its applications until every one runs.

    Raises:
        RuntimeError: The cluster cannot place the replicas (checked before applying), an
            application failed to deploy (Serve's message: a constructor's error, or pip's
            output when its packages could not be installed), or not all ran in time.
    """
    problem = missing_placement(config, api.node_resources())
    if problem:
        raise RuntimeError(f"this cluster cannot run the config: {problem}")
    api.deploy(config)
    names = {entry["name"] for entry in config.get("applications", [])}
    deadline = time.monotonic() + timeout_s
    while True:
        states = [state for state in api.applications() if state.name in names]
        on_progress(states)
        failed = [s for s in states if s.has_failed]
        if failed:
            raise RuntimeError(
                "; ".join(f"{s.name} failed to deploy: {s.failure()}" for s in failed)
            )
        if len(states) == len(names) and all(s.is_running for s in states):
            return states
        if time.monotonic() > deadline:
            waiting = [s for s in states if not s.is_running]
            raise RuntimeError(
                f"not every application ran within {timeout_s:.0f} s: "
                + "; ".join(f"{s.name} {s.status.lower()} {s.message}".strip() for s in waiting)
            )
        time.sleep(poll_s)


def replica_actors(states: list[ApplicationState]) -> dict[str, frozenset[str]]:
    """The Ray actors of each application's replicas, by application name."""
    return {
        state.name: frozenset(
            replica.actor_id
            for deployment in state.deployments
            for replica in deployment.replicas
            if replica.actor_id
        )
        for state in states
    }


def redeploy_and_wait(
    api: ServeApi,
    config: Mapping[str, Any],
    app: str,
    before: Mapping[str, frozenset[str]],
    on_progress: Callable[[list[ApplicationState]], None],
    timeout_s: float,
    poll_s: float = 1.0,
) -> dict[str, frozenset[str]]:
    """Apply ``config``, in which ``app`` changed, and wait until new replicas serve it.

    Serve keeps ``RUNNING`` on an application for a moment after a new config arrives, so
    "running" alone could be the old replicas: this waits until every replica of ``app``
    is a new actor (none of ``before[app]``) and the application runs.

    Returns:
        The replicas' actors of every application afterwards (:func:`replica_actors`).

    Raises:
        RuntimeError: Serve refused the config, ``app`` failed to deploy (with Serve's
            reason), or it did not run again in time.
    """
    api.deploy(config)
    old = before.get(app, frozenset())
    deadline = time.monotonic() + timeout_s
    while True:
        states = api.applications()
        state = next((s for s in states if s.name == app), None)
        on_progress([state] if state else [])
        if state is not None and state.has_failed:
            raise RuntimeError(f"{app} failed to deploy: {state.failure()}")
        actors = replica_actors(states)
        mine = actors.get(app, frozenset())
        if state is not None and state.is_running and mine and not mine & old:
            return actors
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app} did not run with the new arguments within {timeout_s:.0f} s")
        time.sleep(poll_s)
