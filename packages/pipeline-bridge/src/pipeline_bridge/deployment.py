"""The NATS bridge and the pipeline service as one Ray Serve application (``/bridge``).

Deployed from the same Serve config as the handlers (``aictl up`` on one machine, a
RayService's ``serveConfigV2`` on a cluster), so applying that config alone serves
``ai.chat.request``, ``voice.request`` and ``ai.pipeline.trigger``:

- :class:`NATSBridgeDeployment` (the ingress): each replica runs one
  :class:`~pipeline_bridge.bridge.Bridge`; replicas share the requests through the
  bridge's queue group (or durable consumer). ``GET /bridge/stats`` reports what they did.
- :class:`PipelineServiceDeployment`: one replica runs the
  :class:`~pipeline_bridge.pipelines.service.PipelineService` (one process must decide,
  since it caps the runs and remembers triggers by ``request_id``).

Serve restarts a replica that dies, as it does for the handlers. A replica that cannot
reach NATS within ``connect_timeout_s`` fails to start with the reason and the setting to
fix (``NATS_URL`` and its credentials), so the application ends ``DEPLOY_FAILED`` with
that message instead of waiting for ever.
"""

# No `from __future__ import annotations`: through `serve.ingress`, FastAPI must see the
# routes' types themselves, not their names.

import os
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from handler_base.deployment import WEB_BODY_BYTES, HandlerArgs, bind_deployment
from handler_base.errors import UnavailableError
from handler_base.http import configure_guard, platform_app
from handler_base.messaging import connect
from handler_base.settings import Settings
from handler_base.telemetry import setup_telemetry
from pipeline_bridge.bridge import Bridge
from pipeline_bridge.config import BridgeConfig
from pipeline_bridge.pipelines.service import PipelineService, PipelineServiceConfig

APP_NAME = "bridge"
ROUTE_PREFIX = "/bridge"

api: FastAPI = platform_app(
    "NATS bridge",
    "NATS requests (ai.chat.request, voice.request, ai.pipeline.trigger) served by the "
    "platform's handlers.",
    max_body_bytes=WEB_BODY_BYTES,
)


def _cannot_reach_nats(exc: Exception) -> UnavailableError:
    return UnavailableError(
        f"the NATS bridge cannot reach NATS ({exc}); set NATS_URL (and NATS_USER/"
        "NATS_PASSWORD, NATS_TOKEN or NATS_CREDS_FILE) in the application's "
        "runtime_env.env_vars to a server this node can reach"
    )


class BridgeArgs(HandlerArgs):
    """Builder arguments of the bridge application (the Serve config's ``args``).

    The :class:`HandlerArgs` fields size the bridge replicas; the pipeline service runs
    one replica with the same custom resources.
    """

    num_cpus: float = Field(default=0.05, gt=0.0)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig.from_settings)
    pipelines: PipelineServiceConfig = Field(default_factory=PipelineServiceConfig)
    connect_timeout_s: float = Field(default=20.0, gt=0)
    """How long a replica tries to reach NATS before it fails to start."""


@serve.deployment(name="PipelineService")
class PipelineServiceDeployment:
    """Serves ``ai.pipeline.trigger`` and publishes the runs' status events."""

    async def __init__(self, args: BridgeArgs) -> None:  # type: ignore[misc]
        """Connect to NATS (within ``args.connect_timeout_s``) and serve triggers."""
        settings = Settings()
        setup_telemetry(settings, service_name="pipeline-service")
        self.service = PipelineService(settings=settings, config=args.pipelines)
        try:
            nc = await connect(settings, connect_wait_s=args.connect_timeout_s)
        except UnavailableError as exc:
            raise _cannot_reach_nats(exc) from None
        await self.service.start(nc)

    async def stats(self) -> dict[str, Any]:
        """The process id of the replica and the runs going now."""
        return {"pid": os.getpid(), "active_runs": self.service.active_runs}

    async def __del__(self) -> None:
        """Let the runs end (see :meth:`PipelineService.stop`) when Serve stops the replica."""
        await self.service.stop()


@serve.deployment(name="NATSBridge")
@serve.ingress(api)
class NATSBridgeDeployment:
    """One NATS bridge per replica; see the module docstring."""

    async def __init__(  # type: ignore[misc]
        self, args: BridgeArgs, pipeline: DeploymentHandle[Any]
    ) -> None:
        """Connect to NATS and serve chat and voice requests.

        Args:
            args: The bridge's configuration and how long to try reaching NATS.
            pipeline: The pipeline service's handle.
        """
        configure_guard(api, args.admission())
        settings = Settings()
        setup_telemetry(settings, service_name="nats-bridge")
        self.pipeline = pipeline
        self.bridge = Bridge(args.bridge, settings)
        try:
            await self.bridge.start(connect_wait_s=args.connect_timeout_s)
        except UnavailableError as exc:
            await self.bridge.stop()
            raise _cannot_reach_nats(exc) from None

    @api.get("/stats")
    async def stats(self) -> dict[str, Any]:
        """``GET /bridge/stats``: what this replica answered, and the pipeline service's runs."""
        pipeline: dict[str, Any] = await self.pipeline.stats.remote()
        return {
            "bridge": {"pid": os.getpid(), "serving": self.bridge.is_serving, **self.bridge.stats},
            "pipeline": pipeline,
        }

    async def check_health(self) -> None:
        """Serve restarts a replica whose bridge stopped serving."""
        if not self.bridge.is_serving:
            raise RuntimeError("the NATS bridge no longer serves")

    async def __del__(self) -> None:
        """Finish the requests in flight, then disconnect."""
        await self.bridge.stop()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The bridge application (``import_path: pipeline_bridge.deployment:build_app``).

    Args:
        args: :class:`BridgeArgs` fields.

    Returns:
        The bound deployments; nothing connects until a replica starts.
    """
    a = BridgeArgs.model_validate(args or {})
    # One pipeline service, placed as the bridge replicas are.
    pipeline = PipelineServiceDeployment.options(  # type: ignore[attr-defined]
        num_replicas=1, ray_actor_options=a.deployment_options()["ray_actor_options"]
    ).bind(a)
    return bind_deployment(NATSBridgeDeployment, a, pipeline)
