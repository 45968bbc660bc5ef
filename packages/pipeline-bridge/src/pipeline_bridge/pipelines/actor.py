"""The pipeline service as one named, restartable Ray actor beside the NATS bridges.

One actor, not one per bridge: it remembers triggers by ``request_id`` (a repeat gets the
same run) and caps the runs going at once, which only holds when one process decides.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from handler_base.errors import UnavailableError
from handler_base.messaging import connect
from handler_base.settings import Settings
from pipeline_bridge.config import BridgeConfig
from pipeline_bridge.pipelines.service import PipelineService, PipelineServiceConfig

logger = logging.getLogger(__name__)

ACTOR_NAME = "pipeline-service"
NAMESPACE = BridgeConfig().namespace
"""The bridge actors' namespace: one place to find the platform's actors."""


class PipelineActor:
    """Hosts a :class:`PipelineService` on its own NATS connection; serves again after a restart.

    Args:
        config: The service's settings.
        settings: NATS and service addresses; the environment's (in the actor) when None.
    """

    def __init__(self, config: PipelineServiceConfig, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.service = PipelineService(settings=self.settings, config=config)
        self._serving = asyncio.Event()
        # An async actor's __init__ runs in its event loop; Ray runs it again on a restart.
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        nc = await connect(self.settings, connect_wait_s=None)
        await self.service.start(nc)
        self._serving.set()

    async def ready(self, timeout_s: float = 60.0) -> bool:
        """True once triggers are served (False if not within ``timeout_s``)."""
        try:
            await asyncio.wait_for(self._serving.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop taking triggers and let the runs end (see :meth:`PipelineService.stop`)."""
        self._task.cancel()
        await self.service.stop()


def start_pipeline_service(
    settings: Settings | None = None,
    config: PipelineServiceConfig | None = None,
    *,
    num_cpus: float = 0.05,
    ready_timeout_s: float = 120.0,
) -> Any:
    """Start the pipeline service actor (or find the running one) and wait until it serves.

    Returns:
        The actor handle; Ray ends the actor once no handle to it is left, so keep it.

    Raises:
        UnavailableError: It did not serve within ``ready_timeout_s``.
    """
    import ray

    remote_class: Any = ray.remote(PipelineActor)
    actor = remote_class.options(
        name=ACTOR_NAME,
        namespace=NAMESPACE,
        get_if_exists=True,
        max_restarts=-1,
        num_cpus=num_cpus,
        max_concurrency=100,
    ).remote(config or PipelineServiceConfig(), settings)
    if not ray.get(actor.ready.remote(ready_timeout_s)):
        raise UnavailableError("the pipeline service did not start serving ai.pipeline.trigger")
    return actor


def stop_pipeline_service(timeout_s: float = 60.0) -> bool:
    """Stop the pipeline service actor, letting its runs end first; False if none ran."""
    import ray

    try:
        actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return False
    try:
        ray.get(actor.stop.remote(), timeout=timeout_s)
    except Exception as exc:  # it is killed next anyway
        logger.warning("the pipeline service did not stop cleanly: %s", exc)
    ray.kill(actor, no_restart=True)
    return True
