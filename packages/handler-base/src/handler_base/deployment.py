"""What every handler application takes as Serve builder arguments: its scale and limits.

The chat, voice and web applications subclass :class:`HandlerArgs` with their own fields;
``aictl.apps`` fills these in per profile, and the rendered Serve config carries them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class HandlerArgs(BaseModel):
    """Replicas, CPUs and queue limits of a handler deployment (no GPU: handlers wait on models).

    Attributes:
        num_replicas: Replicas of the deployment.
        num_cpus: CPUs each replica reserves.
        max_ongoing_requests: Requests a replica works on at once.
        max_queued_requests: Requests waiting beyond that; past it Serve answers 503 at once.
        retry_after_s: ``Retry-After`` of that 503.
    """

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.1, gt=0.0)
    max_ongoing_requests: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=128, ge=1)
    retry_after_s: float = Field(default=1.0, ge=0.0)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        return {
            "num_replicas": self.num_replicas,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": 0},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"retry_after_s": self.retry_after_s},
        }
