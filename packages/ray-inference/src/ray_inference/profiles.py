"""Resources of each model deployment, per profile.

``cpu`` runs all five deployments beside the handlers on one small machine (fractional
CPUs, one replica each). ``gpu`` is the decision record's layout for a GPU cluster. The
same numbers feed the deployments (``Deployment.options``) and the rendered Serve config,
so they live here once.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from handler_base.deployment import actor_options

Profile = Literal["cpu", "gpu"]
PROFILE_ENV = "RAY_AI_PROFILE"
"""Environment variable that picks the profile of ``module:app`` (default ``cpu``)."""


class DeploymentResources(BaseModel):
    """What one deployment asks of the cluster and how much work it takes at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    max_ongoing_requests: int = Field(ge=1)
    """Requests a replica works on at once (``@serve.batch`` collects from these)."""
    max_queued_requests: int = Field(ge=1)
    """Requests waiting for a replica; beyond this the caller gets 503 at once."""
    retry_after_s: float = Field(default=1.0, ge=0)
    """``Retry-After`` of that 503 (Ray sends none unless told)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources that place the replicas (a cluster's workers offer ``worker``)."""

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        return {
            "num_replicas": self.num_replicas,
            "ray_actor_options": actor_options(self.num_cpus, self.num_gpus, self.resources),
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"retry_after_s": self.retry_after_s},
        }

    @property
    def uses_gpu(self) -> bool:
        """True when the replicas ask for a GPU (engines then run on CUDA)."""
        return self.num_gpus > 0


PROFILES: dict[Profile, dict[str, DeploymentResources]] = {
    "cpu": {
        "embeddings": DeploymentResources(
            num_cpus=0.2, max_ongoing_requests=64, max_queued_requests=256
        ),
        "reranker": DeploymentResources(
            num_cpus=0.2, max_ongoing_requests=16, max_queued_requests=64
        ),
        "llm": DeploymentResources(num_cpus=0.4, max_ongoing_requests=4, max_queued_requests=16),
        "whisper": DeploymentResources(num_cpus=0.3, max_ongoing_requests=2, max_queued_requests=8),
        "tts": DeploymentResources(num_cpus=0.3, max_ongoing_requests=4, max_queued_requests=16),
    },
    "gpu": {
        "embeddings": DeploymentResources(
            num_cpus=1, num_gpus=0.8, max_ongoing_requests=128, max_queued_requests=512
        ),
        "reranker": DeploymentResources(
            num_cpus=1, num_gpus=0.8, max_ongoing_requests=64, max_queued_requests=256
        ),
        "llm": DeploymentResources(
            num_cpus=2, num_gpus=0.95, max_ongoing_requests=64, max_queued_requests=256
        ),
        "whisper": DeploymentResources(
            num_cpus=1, num_gpus=0.5, max_ongoing_requests=8, max_queued_requests=32
        ),
        "tts": DeploymentResources(
            num_cpus=1, num_gpus=0.5, max_ongoing_requests=16, max_queued_requests=64
        ),
    },
}


def current_profile() -> Profile:
    """The profile named by ``RAY_AI_PROFILE`` (``cpu`` when unset)."""
    value = os.environ.get(PROFILE_ENV, "cpu").strip().lower()
    if value not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={value!r}: expected one of {sorted(PROFILES)}")
    return value


def resources(service: str, profile: Profile | None = None) -> DeploymentResources:
    """The resources of ``service`` (``embeddings``, ``llm``...) in ``profile``."""
    return PROFILES[profile or current_profile()][service]


class ServiceArgs(BaseModel):
    """Builder arguments every model application takes (the Serve config's ``args``).

    Each application's own arguments subclass this; the resources come from the profile,
    and these fields override its queue limits where a deployment needs other ones.
    """

    model_config = ConfigDict(extra="forbid")

    profile: Profile | None = None
    """``cpu`` or ``gpu``; ``RAY_AI_PROFILE`` (default ``cpu``) when absent."""
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    """Requests a replica takes at once; the profile's when absent."""
    max_queued_requests: int | None = Field(default=None, ge=1)
    """Requests waiting beyond that, answered 503 at once when full; the profile's when
    absent."""
    retry_after_s: float | None = Field(default=None, ge=0)
    """``Retry-After`` of that 503; the profile's when absent."""
    resources: dict[str, float] | None = None
    """Custom Ray resources that place the replicas (the cluster layout's ``worker``)."""

    def resources_for(self, service: str) -> DeploymentResources:
        """The profile's resources of ``service`` with this application's overrides."""
        base = resources(service, self.profile)
        fields = ("max_ongoing_requests", "max_queued_requests", "retry_after_s", "resources")
        overrides = {name: value for name in fields if (value := getattr(self, name)) is not None}
        return base.model_copy(update=overrides)
