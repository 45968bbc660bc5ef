"""What every handler application takes as Serve builder arguments, and the body limits.

The chat, voice and web applications subclass :class:`HandlerArgs` with their own fields;
``aictl.apps`` fills these in per profile, and the rendered Serve config carries them.

The request body limits of every HTTP app are here too, in one place (the README's
"Limits" table lists them). Each is at least the largest body its models accept, text
counted at 4 bytes a character (UTF-8's worst), so a body that passes the limit fails only
on its content; the request guard (:mod:`handler_base.http`) enforces them before the
body is read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from handler_base.filters import MAX_FILTER_CHARS
from handler_base.http import AdmissionLimits
from handler_base.inference import (
    MAX_CHAT_MESSAGE_CHARS,
    MAX_CHAT_MESSAGES,
    MAX_EMBEDDING_INPUT_CHARS,
    MAX_EMBEDDING_INPUTS,
    MAX_RERANK_DOCUMENT_CHARS,
    MAX_RERANK_DOCUMENTS,
    MAX_SPEECH_INPUT_CHARS,
    MAX_TRANSCRIPTION_AUDIO_BYTES,
)
from handler_base.messages import (
    MAX_AUDIO_BYTES,
    MAX_HISTORY_CHARS,
    MAX_HISTORY_MESSAGES,
    MAX_QUERY_CHARS,
)

KIB = 1024
MIB = 1024 * KIB
_UTF8_MAX = 4
"""Bytes of one character at most in UTF-8."""
_FIELDS_SLACK = 64 * KIB
"""Room for the JSON (or multipart) around the large fields."""

CHAT_BODY_BYTES = (
    MAX_QUERY_CHARS + MAX_HISTORY_MESSAGES * MAX_HISTORY_CHARS + MAX_FILTER_CHARS
) * _UTF8_MAX + _FIELDS_SLACK
"""``POST /chat``, ``/chat/v1/chat/completions``, ``/chat/knowledge/search`` (1.6 MiB)."""
INGEST_BODY_BYTES = 64 * MIB
"""``POST /chat/knowledge/documents``: enough for 16 documents of the largest size
(``MAX_DOCUMENT_CHARS``, any UTF-8); ``aictl ingest`` sends 8 files a request."""
VOICE_BODY_BYTES = (MAX_AUDIO_BYTES + 2) // 3 * 4 + _FIELDS_SLACK
"""``POST /voice``, ``/voice/stream``: 25 MiB of audio in base64 (JSON), the largest form."""
WEB_BODY_BYTES = 64 * KIB
"""The web page app: it takes no bodies."""
EMBEDDINGS_BODY_BYTES = MAX_EMBEDDING_INPUTS * MAX_EMBEDDING_INPUT_CHARS * _UTF8_MAX + (
    _FIELDS_SLACK
)
"""``POST /embeddings/v1/embeddings`` (7.9 MiB)."""
RERANKER_BODY_BYTES = (MAX_RERANK_DOCUMENTS + 1) * MAX_RERANK_DOCUMENT_CHARS * _UTF8_MAX + (
    _FIELDS_SLACK
)
"""``POST /reranker/v1/rerank`` (30.6 MiB)."""
LLM_BODY_BYTES = MAX_CHAT_MESSAGES * MAX_CHAT_MESSAGE_CHARS * _UTF8_MAX + _FIELDS_SLACK
"""``POST /llm/v1/chat/completions`` (12.3 MiB)."""
WHISPER_BODY_BYTES = MAX_TRANSCRIPTION_AUDIO_BYTES + MIB
"""``POST /whisper/v1/audio/transcriptions``: a 25 MiB file in a multipart form."""
TTS_BODY_BYTES = MAX_SPEECH_INPUT_CHARS * _UTF8_MAX + _FIELDS_SLACK
"""``POST /tts/v1/audio/speech`` (80 KiB)."""


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

        The replica's guard, not Serve, should queue and shed: Serve's own 503 has a
        plain-text body, not the error shape. So Serve lets twice the guard's working +
        waiting requests into a replica (the second half is room for the requests the
        guard sheds, each answered at once), and its router queues as many again: a burst
        waits there for a moment while the router assigns it, and past that queue Serve
        refuses. Serve's limits stay the last line, and they alone bound handle calls,
        which do not pass through the guard.
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
