"""Pydantic models of every message in the public contract (see ARCHITECTURE.md).

Limits live here, in the models, so HTTP and NATS enforce the same ones. A field over
its size limit fails validation with an error that maps to ``too_large``; any other
bad field maps to ``invalid_request`` (see :func:`handler_base.errors.error_from_validation`).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from handler_base.errors import too_large
from handler_base.filters import KnowledgeFilter

MAX_QUERY_CHARS = 8000
MAX_HISTORY_MESSAGES = 50
MAX_HISTORY_CHARS = 8000
"""Per message of the history."""
MAX_TOP_K = 100
DEFAULT_TOP_K = 20
"""Candidates a chat request takes from the vector search for the reranker: 20 rather
than 10, so the reranker can lift a passage that dense search ranked 11th to 20th
(BENCHMARKS.md, "Retrieval that never loses to dense")."""
MAX_REQUEST_ID_CHARS = 128
MAX_AUDIO_BYTES = 25 * 1024 * 1024
"""Decoded audio per voice request (the same cap as OpenAI's transcription API)."""
MAX_PIPELINE_PARAMS_CHARS = 64 * 1024

DEFAULT_COLLECTION = "default"

# Milvus collection names: a letter or underscore first, then letters, digits, underscores.
COLLECTION_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
"""What a collection may be called (Milvus's rule), for bodies and route paths alike."""
CollectionName = Annotated[str, StringConstraints(pattern=COLLECTION_NAME_PATTERN)]
RequestId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_REQUEST_ID_CHARS, pattern=r"^[\x21-\x7e]+$")
]


def _non_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be empty or only whitespace")
    return stripped


Query = Annotated[str, StringConstraints(max_length=MAX_QUERY_CHARS), AfterValidator(_non_blank)]


def _decode_audio(value: Any) -> Any:
    """Accept raw bytes from Python callers and strict base64 from JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str):
        if len(value) > (MAX_AUDIO_BYTES + 2) // 3 * 4:
            raise too_large("audio is over the limit of {limit} bytes", limit=MAX_AUDIO_BYTES)
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("audio is not valid base64") from exc
    else:
        return value  # pydantic reports the wrong type
    if len(data) > MAX_AUDIO_BYTES:
        raise too_large("audio is over the limit of {limit} bytes", limit=MAX_AUDIO_BYTES)
    return data


AudioBytes = Annotated[
    bytes,
    BeforeValidator(_decode_audio),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
]
"""Audio bytes: base64 in JSON, ``bytes`` in Python."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class HistoryMessage(_Message):
    """One earlier turn of the conversation."""

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=MAX_HISTORY_CHARS)]


class Source(_Message):
    """A passage of the knowledge base that an answer drew on."""

    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Document id, title or path, chunk index, and whatever the ingest attached."""


class _RetrievalOptions(_Message):
    collection: CollectionName = DEFAULT_COLLECTION
    top_k: int = Field(default=DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    """Candidates taken from the vector search."""
    top_n: int = Field(default=5, ge=1, le=MAX_TOP_K)
    """Passages kept after reranking."""
    request_id: RequestId | None = None

    @model_validator(mode="after")
    def _top_n_within_top_k(self) -> Self:
        if self.top_n > self.top_k:
            raise ValueError(f"top_n ({self.top_n}) must not be above top_k ({self.top_k})")
        return self


class ChatRequest(_RetrievalOptions):
    """A question for the chat handler, over HTTP or on ``ai.chat.request``."""

    query: Query
    history: list[HistoryMessage] = Field(default_factory=list, max_length=MAX_HISTORY_MESSAGES)
    filter: KnowledgeFilter | None = None
    """Which chunks to search: a structured filter (:mod:`handler_base.filters`), or a
    Milvus boolean expression such as ``doc_id == "a"`` (the Milvus store only)."""
    stream: bool = False
    """HTTP only: answer as server-sent events."""


class ChatTimings(_Message):
    """Milliseconds spent in each stage of a chat answer."""

    rewrite: float = 0.0
    """Making a follow-up question standalone (0 without history)."""
    embed: float = 0.0
    search: float = 0.0
    rerank: float = 0.0
    check: float = 0.0
    """Asking the LLM whether the passages answer the question at all."""
    generate: float = 0.0
    total: float = 0.0
    embed_model: float | None = None
    """Of ``embed``, the model's compute inside its replica (the batch the query rode in).
    None where the service did not say (the ``*_model`` fields likewise)."""
    rerank_model: float | None = None
    """Of ``rerank``, the reranker's scoring inside its replica."""
    generate_model: float | None = None
    """Of ``generate``, the LLM's generation inside its replica (prompt and decoding)."""
    rewrite_model: float | None = None
    """Of ``rewrite``, the LLM's generation inside its replica."""
    check_model: float | None = None
    """Of ``check``, the LLM's generation inside its replica."""

    @property
    def platform(self) -> float | None:
        """``total`` less the model compute of each stage, or None when one is unknown.

        What the platform itself spent: hops, queues, the search, prompt building.
        """
        stages = (
            (self.rewrite, self.rewrite_model),
            (self.embed, self.embed_model),
            (self.rerank, self.rerank_model),
            (self.check, self.check_model),
            (self.generate, self.generate_model),
        )
        if any(spent > 0 and model is None for spent, model in stages):
            return None
        return self.total - sum(model or 0.0 for _, model in stages)


class ChatResponse(_Message):
    """The answer to a ChatRequest."""

    response: str
    sources: list[Source] = Field(default_factory=list)
    request_id: str | None = None
    timings_ms: ChatTimings = Field(default_factory=ChatTimings)
    rewritten_query: str | None = None
    """The standalone question retrieval searched for, when a follow-up was rewritten."""


class VoiceRequest(_RetrievalOptions):
    """Spoken question for the voice handler, over HTTP or on ``voice.request``."""

    audio: AudioBytes
    format: Literal["wav", "pcm_s16le"] = "wav"
    sample_rate: int | None = Field(default=None, ge=8000, le=192_000)
    """Required for ``pcm_s16le``; a WAV file carries its own rate."""
    voice: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    response_format: Literal["wav", "pcm"] = "wav"
    """The answer's audio: a WAV file, or raw ``s16le`` mono PCM at ``sample_rate``."""

    @model_validator(mode="after")
    def _audio_needs_a_rate(self) -> Self:
        if not self.audio:
            raise ValueError("audio is empty")
        if self.format == "pcm_s16le" and self.sample_rate is None:
            raise ValueError("sample_rate is required when format is pcm_s16le")
        return self


class VoiceTimings(_Message):
    """Milliseconds spent in each stage of a voice answer."""

    stt: float = 0.0
    rag: float = 0.0
    generate: float = 0.0
    tts: float = 0.0
    total: float = 0.0
    embed: float | None = None
    """Of ``rag``, the query's embedding (the chat answer's ``embed``); ``search`` and
    ``rerank`` likewise. None where no chat answer was asked for (nothing heard)."""
    search: float | None = None
    rerank: float | None = None
    first_token: float | None = None
    """From the request to the first piece of the answer's text (the ``first_*`` keys are
    the path to the first audio, each from the request, but ``first_tts``)."""
    first_sentence: float | None = None
    """From the request to the first sentence (or early clause) complete, sent to TTS."""
    first_tts: float | None = None
    """The synthesis of the first sentence (a duration)."""
    first_audio: float | None = None
    """From the request to the first sentence's audio ready in the handler."""


class VoiceResponse(_Message):
    """The answer to a VoiceRequest: what was heard, the answer as text and as WAV."""

    transcript: str
    response: str
    sources: list[Source] = Field(default_factory=list)
    audio: AudioBytes
    sample_rate: int
    audio_format: Literal["wav", "pcm"] = "wav"
    """What ``audio`` holds: the request's ``response_format``."""
    request_id: str | None = None
    timings_ms: VoiceTimings = Field(default_factory=VoiceTimings)


class VoiceTranscriptEvent(_Message):
    """Stream event ``transcript``: what was heard."""

    type: Literal["transcript"] = "transcript"
    text: str
    language: str | None = None


class VoiceTextEvent(_Message):
    """Stream event ``text``: the next piece of the written answer."""

    type: Literal["text"] = "text"
    text: str


class VoiceAudioEvent(_Message):
    """Stream event ``audio``: one sentence of the answer, spoken; ``index`` counts from 0."""

    type: Literal["audio"] = "audio"
    index: int = Field(ge=0)
    text: str
    """The sentence spoken."""
    audio: AudioBytes
    sample_rate: int
    audio_format: Literal["wav", "pcm"] = "wav"


class VoiceDoneEvent(_Message):
    """Stream event ``done``, the last: the whole answer as text, its sources and timings."""

    type: Literal["done"] = "done"
    transcript: str
    response: str
    sources: list[Source] = Field(default_factory=list)
    sentences: int = 0
    """How many ``audio`` events came before."""
    first_audio_ms: float | None = None
    """From the request to the first ``audio`` event (None when there was none)."""
    request_id: str | None = None
    timings_ms: VoiceTimings = Field(default_factory=VoiceTimings)


VoiceEvent = Annotated[
    VoiceTranscriptEvent | VoiceTextEvent | VoiceAudioEvent | VoiceDoneEvent,
    Field(discriminator="type"),
]
"""One event of a streamed voice answer; over SSE the event name is its ``type``."""


class PipelineRunState(StrEnum):
    """The life of a pipeline run, in order."""

    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """True once the run has ended."""
        return self in (PipelineRunState.SUCCEEDED, PipelineRunState.FAILED)


class PipelineTrigger(_Message):
    """A request on ``ai.pipeline.trigger`` to start a pipeline run."""

    pipeline: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    params: dict[str, Any] = Field(default_factory=dict)
    request_id: RequestId | None = None

    @model_validator(mode="after")
    def _params_size(self) -> Self:
        size = len(self.model_dump_json(include={"params"}))
        if size > MAX_PIPELINE_PARAMS_CHARS:
            raise too_large(
                "params are {size} bytes as JSON, over the limit of {limit}",
                size=size,
                limit=MAX_PIPELINE_PARAMS_CHARS,
            )
        return self


class PipelineRunAccepted(_Message):
    """The reply to a PipelineTrigger: the run's id and its state."""

    run_id: str
    state: PipelineRunState


class PipelineRunStatus(_Message):
    """The ``data`` of a pipeline status event."""

    run_id: str
    pipeline: str
    state: PipelineRunState
    error: str | None = None


PIPELINE_EVENT_TYPE_PREFIX = "ai.pipeline.run."


class PipelineStatusEvent(BaseModel):
    """A CloudEvents 1.0 event (JSON format) on ``ai.pipeline.status.<run_id>``."""

    model_config = ConfigDict(extra="allow")  # CloudEvents allows extension attributes

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    type: str
    subject: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    data: PipelineRunStatus

    @classmethod
    def for_status(cls, status: PipelineRunStatus, source: str) -> PipelineStatusEvent:
        """The event that reports ``status``; its type names the state."""
        return cls(
            source=source,
            type=f"{PIPELINE_EVENT_TYPE_PREFIX}{status.state.value}",
            subject=status.run_id,
            data=status,
        )

    @model_validator(mode="after")
    def _type_matches_state(self) -> Self:
        expected = f"{PIPELINE_EVENT_TYPE_PREFIX}{self.data.state.value}"
        if self.type != expected:
            raise ValueError(
                f"type {self.type!r} does not match data.state (expected {expected!r})"
            )
        return self
