"""One spec per model application: what it serves, what it takes, what it asks for.

Each model module (``ray_inference.embeddings``, ...) exports one :class:`ModelAppSpec`,
``SPEC``, that ties together

- the service's contract (:class:`handler_base.services.ModelService`: app name and
  route, ingress deployment, body limit), which the clients and the settings read too;
- its builder arguments (a :class:`ServiceArgs` model: the Serve config's ``args``);
- its builder (``build_app``, the Serve config's ``import_path``);
- its resources in each profile.

``aictl.apps`` renders one Serve application per spec (:data:`ray_inference.catalog.MODEL_APPS`).
A builder validates its ``args`` into one :class:`ServiceArgs` object and binds it as the
deployment's one argument::

    def build_app(args: dict[str, Any] | None = None) -> Application:
        return bind_deployment(EmbeddingsDeployment, EmbeddingsArgs.model_validate(args or {}))

so each field is written once, in the args model, and the replica reads the same object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from handler_base.http import AdmissionLimits
from handler_base.services import ModelService
from ray_inference.profiles import (
    DeploymentResources,
    Profile,
    ProfileResources,
    current_profile,
)


class ServiceArgs(BaseModel):
    """Builder arguments every model application takes (the Serve config's ``args``).

    Each application's own arguments subclass this and name, as class variables, the
    service they configure and its resources per profile. The fields here pick the
    profile and override its queue limits and placement where a deployment needs others.

    Attributes:
        service: The model service's contract (class variable).
        profile_resources: The deployment's resources in each profile (class variable).
    """

    model_config = ConfigDict(extra="forbid")

    service: ClassVar[ModelService]
    profile_resources: ClassVar[ProfileResources]

    profile: Profile = Field(default_factory=current_profile)
    """``cpu`` or ``gpu``; ``RAY_AI_PROFILE`` (default ``cpu``) when absent, read where the
    arguments are validated (the builder), so that the replicas follow the builder."""
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    """Requests a replica takes at once; the profile's when absent."""
    max_queued_requests: int | None = Field(default=None, ge=1)
    """Requests waiting beyond that, answered 503 at once when full; the profile's when
    absent."""
    retry_after_s: float | None = Field(default=None, ge=0)
    """``Retry-After`` of that 503; the profile's when absent."""
    resources: dict[str, float] | None = None
    """Custom Ray resources that place the replicas (the cluster layout's ``worker``)."""

    def deployment_resources(self) -> DeploymentResources:
        """The profile's resources of the deployment, with these arguments' overrides."""
        base = self.profile_resources.of(self.profile)
        fields = ("max_ongoing_requests", "max_queued_requests", "retry_after_s", "resources")
        overrides = {name: value for name in fields if (value := getattr(self, name)) is not None}
        return base.model_copy(update=overrides)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        return self.deployment_resources().deployment_options()

    def admission(self) -> AdmissionLimits:
        """The request guard's limits of one replica (for ``configure_guard``)."""
        return AdmissionLimits.of(self.deployment_resources())

    @property
    def uses_gpu(self) -> bool:
        """Whether the replicas get a GPU (the engines then run on CUDA)."""
        return self.deployment_resources().uses_gpu


@dataclass(frozen=True, slots=True)
class ModelAppSpec:
    """One model application: its contract, builder arguments, builder and resources.

    Attributes:
        args_model: The builder's arguments; it names the service and its resources.
        build_app: The builder Serve calls with the config's ``args`` (a dict, or None).
    """

    args_model: type[ServiceArgs]
    build_app: Callable[[dict[str, Any] | None], Application]

    @property
    def service(self) -> ModelService:
        """The contract the clients and settings read."""
        return self.args_model.service

    @property
    def name(self) -> str:
        """The Serve application's name."""
        return self.service.name

    @property
    def route_prefix(self) -> str:
        """Where the Serve proxy routes the application's requests."""
        return self.service.route_prefix

    @property
    def import_path(self) -> str:
        """The builder as a Serve config names it (``module:function``)."""
        return f"{self.build_app.__module__}:{self.build_app.__name__}"

    def resources(self, profile: Profile) -> DeploymentResources:
        """The deployment's resources in ``profile`` (without overrides)."""
        return self.args_model.profile_resources.of(profile)
