"""The profiles, and what a model deployment asks of the cluster in each.

``cpu`` runs all five deployments beside the handlers on one small machine (fractional
CPUs, one replica each). ``gpu`` is the decision record's layout for a GPU cluster. Each
model app's numbers live in its spec (``ray_inference.<model>.SPEC``, see
:mod:`ray_inference.spec`); the same numbers feed the deployment (``Deployment.options``)
and the rendered Serve config.
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


class ProfileResources(BaseModel):
    """What one deployment asks of the cluster in each profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: DeploymentResources
    gpu: DeploymentResources

    def of(self, profile: Profile) -> DeploymentResources:
        """The resources in ``profile``."""
        return self.cpu if profile == "cpu" else self.gpu


PROFILES: tuple[Profile, ...] = ("cpu", "gpu")


def current_profile() -> Profile:
    """The profile named by ``RAY_AI_PROFILE`` (``cpu`` when unset)."""
    value = os.environ.get(PROFILE_ENV, "cpu").strip().lower()
    if value not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={value!r}: expected one of {sorted(PROFILES)}")
    return value
