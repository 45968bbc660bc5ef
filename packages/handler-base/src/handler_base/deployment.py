"""What every handler application takes as Serve builder arguments, and its body limits.

The chat, voice, web and bridge applications subclass :class:`HandlerArgs` with their
own fields; ``aictl.apps`` fills these in per profile, and the rendered Serve config
carries them. Each builder validates its arguments into one such object and binds it:
``Deployment.options(**args.deployment_options()).bind(args)``.

The request body limits of the handler apps are here; the model apps' are in their
contract (:mod:`handler_base.services`). Each is at least the largest body the app
accepts, text counted at 4 bytes a character (UTF-8's worst), so a body that passes the
limit fails only on its content; the request guard (:mod:`handler_base.http`) enforces
them before the body is read (the README's "Limits" table lists them).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from handler_base.filters import MAX_FILTER_CHARS
from handler_base.http import AdmissionLimits
from handler_base.messages import (
    MAX_AUDIO_BYTES,
    MAX_HISTORY_CHARS,
    MAX_HISTORY_MESSAGES,
    MAX_QUERY_CHARS,
)
from handler_base.services import BODY_FIELDS_SLACK, KIB, MIB, UTF8_MAX_BYTES

if TYPE_CHECKING:
    from ray.serve import Application

CHAT_BODY_BYTES = (
    MAX_QUERY_CHARS + MAX_HISTORY_MESSAGES * MAX_HISTORY_CHARS + MAX_FILTER_CHARS
) * UTF8_MAX_BYTES + BODY_FIELDS_SLACK
"""``POST /chat``, ``/chat/v1/chat/completions``, ``/chat/knowledge/search`` (1.6 MiB)."""
INGEST_BODY_BYTES = 64 * MIB
"""``POST /chat/knowledge/documents``: enough for 16 documents of the largest size
(``MAX_DOCUMENT_CHARS``, any UTF-8); ``aictl ingest`` sends 8 files a request."""
VOICE_BODY_BYTES = (MAX_AUDIO_BYTES + 2) // 3 * 4 + BODY_FIELDS_SLACK
"""``POST /voice``, ``/voice/stream``: 25 MiB of audio in base64 (JSON), the largest form."""
WEB_BODY_BYTES = 64 * KIB
"""The web page app: it takes no bodies."""


class DeploymentArgs(Protocol):
    """A deployment's validated builder arguments: they size the deployment they configure."""

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        ...


def bind_deployment(deployment: Any, args: DeploymentArgs, *handles: Any) -> Application:
    """``deployment`` sized by ``args`` and bound to them: its replicas get ``args`` itself.

    Args:
        deployment: A ``@serve.deployment`` class whose ``__init__`` takes ``args`` first.
        args: The validated builder arguments.
        handles: Further ``__init__`` arguments after ``args``: other bound deployments,
            which the replica gets as handles.
    """
    # `@serve.deployment` makes the class a Deployment; its type stubs do not say so.
    application: Application = deployment.options(**args.deployment_options()).bind(args, *handles)
    return application


def build_application(import_path: str, args: Mapping[str, Any]) -> Any:
    """The Serve application that the builder ``module:function`` makes from ``args``.

    This is what Serve does with a config's ``import_path`` and ``args``: the builder
    validates the arguments and binds the deployments, and starts nothing.
    """
    module_name, _, attribute = import_path.partition(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    return builder(dict(args))


def actor_options(num_cpus: float, num_gpus: float, resources: dict[str, float]) -> dict[str, Any]:
    """A replica's ``ray_actor_options``: CPUs, GPUs and the custom resources that place it."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if resources:
        options["resources"] = dict(resources)
    return options


class HandlerArgs(BaseModel):
    """Replicas, CPUs and queue limits of a handler deployment (no GPU: handlers wait on models).

    The queue limits are the request guard's (see :meth:`admission`): a replica works on
    ``max_ongoing_requests`` HTTP requests, ``max_queued_requests`` more wait in it, and the
    next is answered 503 ``unavailable`` with ``Retry-After`` at once, in the error shape.

    Attributes:
        num_replicas: Replicas of the deployment.
        num_cpus: CPUs each replica reserves.
        max_ongoing_requests: Requests a replica works on at once.
        max_queued_requests: Requests waiting beyond that; past it the answer is 503.
        retry_after_s: ``Retry-After`` of that 503.
        resources: Custom Ray resources each replica needs, which place it (a cluster
            gives its head node ``head`` and the renderer asks handlers for a share of it).
    """

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.1, gt=0.0)
    max_ongoing_requests: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=128, ge=1)
    retry_after_s: float = Field(default=1.0, ge=0.0)
    resources: dict[str, float] = Field(default_factory=dict)

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``.

        The replica's guard, not Serve, should queue and shed: it sheds in FIFO order and
        at once, while Serve's own 503 (in the error shape only where the proxy has
        :mod:`handler_base.proxy_errors`) comes after a wait in its router. So Serve
        lets twice the guard's working + waiting requests into a replica (the second half
        is room for the requests the guard sheds, each answered at once), and its router
        queues as many again: a burst waits there for a moment while the router assigns
        it, and past that queue Serve refuses. Serve's limits stay the last line, and
        they alone bound handle calls, which do not pass through the guard.
        """
        serve_limit = 2 * (self.max_ongoing_requests + self.max_queued_requests)
        return {
            "num_replicas": self.num_replicas,
            "ray_actor_options": actor_options(self.num_cpus, 0, self.resources),
            "max_ongoing_requests": serve_limit,
            "max_queued_requests": serve_limit,
            "backpressure_config": {"retry_after_s": self.retry_after_s},
        }

    def admission(self) -> AdmissionLimits:
        """The request guard's limits of one replica (for ``configure_guard``)."""
        return AdmissionLimits.of(self)
