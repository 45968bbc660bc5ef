"""Messages of the model services: OpenAI-shaped requests and responses, with limits.

The deployments in ``ray_inference`` and the clients in :mod:`handler_base.clients` both
use these models, so the handle path and the HTTP path carry the same data. Requests
accept unknown fields (OpenAI clients send options we do not use); responses are exact.
"""

from __future__ import annotations

import array
import base64
import sys
import time
import uuid
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_EMBEDDING_INPUTS = 256
"""Texts in one embeddings request."""
MAX_EMBEDDING_INPUT_CHARS = 8_000
"""Characters of one text to embed (the model reads its first 256 tokens)."""
MAX_RERANK_DOCUMENTS = 1_000
MAX_RERANK_DOCUMENT_CHARS = 8_000
MAX_CHAT_MESSAGES = 100
MAX_CHAT_MESSAGE_CHARS = 32_000
MAX_COMPLETION_TOKENS = 1_024
"""The most tokens one chat completion may ask for."""
MAX_SPEECH_INPUT_CHARS = 4_096
"""Characters of text for one speech request (OpenAI's limit too)."""
MAX_STOP_SEQUENCES = 4


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


MODEL_TIME_HEADER = "X-Model-Time-Ms"
"""HTTP response header: the model compute of the request inside the replica, in ms."""
MODEL_TIME_FIELD = "model_time_ms"


class ModelTimed(_Response):
    """A model service's answer that says how long the model computed for it.

    ``model_time_ms`` is measured inside the replica around the model call only (not the
    queue in front of it, not validation or serialization). For a batched call it is the
    compute of the batch (or batches) the request rode in. It is not part of the JSON
    body (``exclude=True``): the handle path carries it on the object, HTTP in the
    :data:`MODEL_TIME_HEADER` header, which the clients read back into this field.
    """

    model_time_ms: float | None = Field(default=None, exclude=True)


# --- embeddings -------------------------------------------------------------------------

EmbeddingText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_EMBEDDING_INPUT_CHARS)
]


class EmbeddingsRequest(_Request):
    """``POST /embeddings/v1/embeddings``: one text or a list of texts."""

    input: (
        EmbeddingText
        | Annotated[list[EmbeddingText], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    """``base64``: each vector as the base64 of its little-endian float32 bytes (the
    official ``openai`` client asks for this unless told otherwise)."""

    @property
    def texts(self) -> list[str]:
        """The input as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(_Response):
    """One vector of an embeddings response."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """The vector, or its base64 form (``encoding_format="base64"``)."""

    @property
    def vector(self) -> list[float]:
        """The vector, decoded from base64 where it came so."""
        if isinstance(self.embedding, list):
            return self.embedding
        values = array.array("f", base64.b64decode(self.embedding))
        if sys.byteorder == "big":
            values.byteswap()
        return values.tolist()


class Usage(_Response):
    """Token counts of a request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResponse(ModelTimed):
    """The OpenAI embeddings response."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage = Field(default_factory=Usage)

    @property
    def vectors(self) -> list[list[float]]:
        """The vectors, in input order."""
        return [item.vector for item in sorted(self.data, key=lambda e: e.index)]


# --- reranker ---------------------------------------------------------------------------


class RerankRequest(_Request):
    """``POST /reranker/v1/rerank`` (the Cohere/Jina shape)."""

    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_RERANK_DOCUMENT_CHARS)]
    documents: Annotated[
        list[Annotated[str, StringConstraints(max_length=MAX_RERANK_DOCUMENT_CHARS)]],
        Field(min_length=1, max_length=MAX_RERANK_DOCUMENTS),
    ]
    top_n: int | None = Field(default=None, ge=1)
    model: str | None = None


class RerankResult(_Response):
    """The score of one document; ``index`` is its place in the request."""

    index: int
    relevance_score: float


class RerankResponse(ModelTimed):
    """Results best first."""

    results: list[RerankResult]
    model: str | None = None


# --- LLM --------------------------------------------------------------------------------


class ChatMessage(_Request):
    """One message of a chat completion request."""

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=MAX_CHAT_MESSAGE_CHARS)]


class ChatCompletionRequest(_Request):
    """``POST /llm/v1/chat/completions`` (the OpenAI shape; ``n`` must be 1)."""

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_CHAT_MESSAGES)]
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_COMPLETION_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_COMPLETION_TOKENS)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: bool = False
    seed: int | None = None
    n: Literal[1] = 1

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def completion_id() -> str:
    """A new OpenAI-style completion id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


class AssistantMessage(_Response):
    """The answer of a chat completion."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatCompletionChoice(_Response):
    """The one choice of a chat completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionResponse(ModelTimed):
    """The OpenAI chat completion response."""

    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage = Field(default_factory=Usage)

    @property
    def text(self) -> str:
        """The answer's text."""
        return self.choices[0].message.content


class ChunkDelta(_Response):
    """What a stream chunk adds."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(_Response):
    """The one choice of a stream chunk."""

    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(ModelTimed):
    """One server-sent event of a streamed chat completion.

    The last chunk (the finish reason) carries ``model_time_ms``: the sum of the
    generation time in the replica. Over HTTP it is a comment line of that event
    (``: X-Model-Time-Ms 123.4``), which SSE readers (OpenAI's too) skip.
    """

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]

    @property
    def texts(self) -> list[str]:
        """The content this chunk adds (one piece per choice that adds any)."""
        return [choice.delta.content for choice in self.choices if choice.delta.content]


class ModelCard(_Response):
    """One entry of ``GET /llm/v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "ray-ai-platform"


class ModelList(_Response):
    """``GET /llm/v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- speech to text ---------------------------------------------------------------------

MAX_TRANSCRIPTION_AUDIO_BYTES = 25 * 1024**2
"""Bytes of one audio file to transcribe (OpenAI's limit too)."""
MAX_HOTWORDS_CHARS = 1_000
"""Characters of a transcription's ``hotwords`` (Whisper's prompt holds about 223 tokens)."""


class TranscriptionOptions(_Request):
    """The form fields of ``POST /whisper/v1/audio/transcriptions`` besides the file."""

    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")] | None = None
    """ISO-639-1 code; detected when absent."""
    prompt: Annotated[str, StringConstraints(max_length=1_000)] | None = None
    hotwords: Annotated[str, StringConstraints(max_length=MAX_HOTWORDS_CHARS)] | None = None
    """Words to listen for (names, rare terms), space-separated: faster-whisper's
    ``hotwords``, put before the prompt when decoding. Whisper reads at most 223 prompt
    tokens; longer hotwords are cut."""
    model: str | None = None


class TranscriptionResponse(ModelTimed):
    """What was said, in which language, and how long the audio was (seconds)."""

    text: str
    language: str
    duration: float


# --- text to speech ---------------------------------------------------------------------

MAX_VOICE_NAME_CHARS = 128


class SpeechRequest(_Request):
    """``POST /tts/v1/audio/speech``."""

    input: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_SPEECH_INPUT_CHARS),
    ]
    voice: Annotated[str, StringConstraints(max_length=MAX_VOICE_NAME_CHARS)] | None = None
    """A voice name; the deployment's default when absent (and, as configured, for a name
    it does not know)."""
    response_format: Literal["wav", "pcm"] = "wav"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    model: str | None = None


class SpeechAudio(ModelTimed):
    """Synthesized speech, as the handle path returns it (HTTP returns the bytes)."""

    audio: bytes
    sample_rate: int
    format: Literal["wav", "pcm"]
    voice: str | None = None
    """The voice that spoke (the default one for an unknown name, see the TTS app)."""

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.audio:
            raise ValueError("no audio was produced")
        return self
