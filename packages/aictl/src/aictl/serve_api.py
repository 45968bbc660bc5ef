"""Serve's REST API on the Ray dashboard: what ``serve deploy`` and ``serve status`` use.

``aictl up`` applies the rendered Serve config through it (so what runs is the document a
RayService would carry) and follows the applications until they run; ``aictl status``
reads it from another shell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

APPLICATIONS_ROUTE = "/api/serve/applications/"


class ReplicaState(BaseModel):
    """One replica of a deployment."""

    model_config = ConfigDict(extra="ignore")

    state: str
    pid: int | None = None


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

    def shutdown(self) -> None:
        """Delete every application and stop Serve."""
        self._client.delete(APPLICATIONS_ROUTE).raise_for_status()


def summarize(states: list[ApplicationState]) -> str:
    """e.g. ``5 running, 2 deploying`` over all applications."""
    counts = Counter(state.status.lower() for state in states)
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
