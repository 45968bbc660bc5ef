"""Configuration of the NATS bridge: its route table, limits, delivery mode, JetStream names."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from handler_base.clients import ChatClient, VoiceClient
from handler_base.messages import ChatRequest, VoiceRequest
from handler_base.settings import Settings
from pipeline_bridge.routes import RouteSpec

DeliveryMode = Literal["core", "at_least_once"]
"""``core``: plain NATS request/reply in a queue group (a request in flight when a bridge
dies is lost; its requester times out). ``at_least_once``: requests captured by a
JetStream stream, read with a durable consumer and acked after the reply is sent."""


class BridgeConfig(BaseModel):
    """How the bridge actors serve NATS; see the package README for each setting.

    Build it with :meth:`from_settings` to take the subjects and the deadline from
    :class:`handler_base.Settings` (the environment).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chat_subject: str = Field(default="ai.chat.request", min_length=1)
    voice_subject: str = Field(default="voice.request", min_length=1)
    routes: tuple[RouteSpec, ...] = ()
    """More routes, served beside chat and voice (see :meth:`route_table`)."""
    queue_group: str = Field(default="nats-bridge", min_length=1)
    """Core mode: the bridges of one queue group split the requests among them."""
    mode: DeliveryMode = "core"

    max_in_flight: int = Field(default=8, ge=1)
    """Handler calls one bridge actor runs at once."""
    max_waiting: int = Field(default=32, ge=0)
    """Core mode: requests one actor lets wait for a free slot; past that a request is
    answered ``unavailable`` at once, so its requester can go elsewhere. In
    at-least-once mode requests wait in the stream instead, bounded by their deadline."""
    deadline_s: float = Field(default=30.0, gt=0)
    """A request without an ``X-Request-Timeout-S`` header is answered ``timeout`` when it
    is not done after this many seconds."""
    max_deadline_s: float = Field(default=600.0, gt=0)
    """The most a request's header may ask for."""

    # --- at-least-once mode ----------------------------------------------------------
    stream: str = Field(default="AI_REQUESTS", pattern=r"^[^.*>\s]+$")
    """The JetStream stream that captures the request subjects."""
    stream_max_age_s: float = Field(default=3600.0, gt=0)
    durable: str = Field(default="nats-bridge", pattern=r"^[^.*>\s]+$")
    """The durable consumer all bridge actors share."""
    ack_wait_s: float = Field(default=30.0, gt=0)
    """A request not acked within this (its bridge died) is delivered again. A live
    bridge extends it while it works."""
    max_deliver: int = Field(default=5, ge=1)
    """Deliveries in all; a request that fails them all goes to the dead-letter subject."""
    dead_letter_subject: str = Field(default="ai.requests.dead_letter", min_length=1)
    replies_bucket: str = Field(default="AI_REPLIES", pattern=r"^[a-zA-Z0-9_-]+$")
    """The JetStream key-value bucket of replies given, for answering repeats."""
    replies_ttl_s: float = Field(default=600.0, gt=0)
    """How long a reply is kept for repeats of its request."""

    namespace: str = Field(default="ai-platform", min_length=1)
    """The Ray namespace of the named bridge actors."""
    name_prefix: str = Field(default="nats-bridge", min_length=1)
    """Actor ``i`` is named ``f"{name_prefix}-{i}"``."""
    num_cpus: float = Field(default=0.05, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        table = self.route_table()
        for field, values in (
            ("subject", [r.subject for r in table]),
            ("name", [r.name for r in table]),
        ):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"two routes have the {field} {', '.join(repeated)}")
        if self.deadline_s > self.max_deadline_s:
            raise ValueError("deadline_s must not be over max_deadline_s")
        return self

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> BridgeConfig:
        """The config with the subjects and deadline of ``settings`` (the environment).

        Args:
            settings: Read from the environment when None.
            **overrides: Fields that replace the defaults.
        """
        settings = settings if settings is not None else Settings()
        values: dict[str, Any] = {
            "chat_subject": settings.nats_chat_subject,
            "voice_subject": settings.nats_voice_subject,
            "deadline_s": settings.nats_request_timeout_s,
        }
        values.update(overrides)
        return cls(**values)

    def route_table(self) -> tuple[RouteSpec, ...]:
        """Every route the bridge serves: chat, voice, then :attr:`routes`.

        A route of the platform is one entry here (its subject a field of this config
        when it should be configurable); a deployment adds its own in :attr:`routes`.
        """
        return (
            RouteSpec(
                name="chat",
                subject=self.chat_subject,
                request_model=ChatRequest,
                client=ChatClient,
                method="chat",
            ),
            RouteSpec(
                name="voice",
                subject=self.voice_subject,
                request_model=VoiceRequest,
                client=VoiceClient,
                method="voice",
            ),
            *self.routes,
        )

    @property
    def subjects(self) -> list[str]:
        """The request subjects served."""
        return [route.subject for route in self.route_table()]
