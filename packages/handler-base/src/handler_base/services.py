"""The model services' contract: where each one is served and what it accepts.

One :class:`ModelService` per model application (embeddings, reranker, LLM, Whisper,
TTS), read by both sides: ``ray_inference`` serves it (its Serve application, ingress
deployment and request body limit) and the clients of :mod:`handler_base.clients` and
:class:`~handler_base.settings.Settings` find it (the Ray handle lookup, the HTTP
fallback's default URL). A model app is named here once.

The body limits are at least the largest body the model accepts, text counted at 4
bytes a character (UTF-8's worst), so a body that passes the limit fails only on its
content; the request guard (:mod:`handler_base.http`) enforces them before the body is
read. The README's "Limits" table lists them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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

KIB = 1024
MIB = 1024 * KIB
UTF8_MAX_BYTES = 4
"""Bytes of one character at most in UTF-8."""
BODY_FIELDS_SLACK = 64 * KIB
"""Room for the JSON (or multipart) around a body's large fields."""


class ModelService(BaseModel):
    """A model service as its callers and its deployment both see it.

    Attributes:
        name: The Serve application, served at route prefix ``/<name>``.
        deployment: The application's ingress deployment, whose methods the clients'
            handles call.
        max_body_bytes: The largest HTTP request body the application reads.
        url_setting: The :class:`~handler_base.settings.Settings` name of the HTTP
            fallback's URL: field ``<url_setting>_url``, variable ``<URL_SETTING>_URL``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    deployment: str = Field(min_length=1)
    max_body_bytes: int = Field(gt=0)
    url_setting: str = Field(pattern=r"^[a-z][a-z0-9_]*$")

    @property
    def route_prefix(self) -> str:
        """Where the Serve proxy routes the application's HTTP requests."""
        return f"/{self.name}"

    @property
    def url_field(self) -> str:
        """The Settings field of the HTTP fallback's base URL (``embeddings_url``...)."""
        return f"{self.url_setting}_url"

    @property
    def url_env(self) -> str:
        """The environment variable of that URL (``EMBEDDINGS_URL``...)."""
        return self.url_field.upper()

    def url_under(self, serve_url: str) -> str:
        """The application's base URL on the Serve proxy at ``serve_url``."""
        return f"{serve_url.rstrip('/')}{self.route_prefix}"


EMBEDDINGS = ModelService(
    name="embeddings",
    deployment="EmbeddingsDeployment",
    # POST /embeddings/v1/embeddings (7.9 MiB)
    max_body_bytes=MAX_EMBEDDING_INPUTS * MAX_EMBEDDING_INPUT_CHARS * UTF8_MAX_BYTES
    + BODY_FIELDS_SLACK,
    url_setting="embeddings",
)
RERANKER = ModelService(
    name="reranker",
    deployment="RerankerDeployment",
    # POST /reranker/v1/rerank: the query and the documents (30.6 MiB)
    max_body_bytes=(MAX_RERANK_DOCUMENTS + 1) * MAX_RERANK_DOCUMENT_CHARS * UTF8_MAX_BYTES
    + BODY_FIELDS_SLACK,
    url_setting="reranker",
)
LLM = ModelService(
    name="llm",
    # The cpu profile's deployment; the gpu profile's Ray Serve LLM app has others, which
    # the LLM client finds too.
    deployment="LLMDeployment",
    # POST /llm/v1/chat/completions (12.3 MiB)
    max_body_bytes=MAX_CHAT_MESSAGES * MAX_CHAT_MESSAGE_CHARS * UTF8_MAX_BYTES + BODY_FIELDS_SLACK,
    url_setting="llm",
)
WHISPER = ModelService(
    name="whisper",
    deployment="WhisperDeployment",
    # POST /whisper/v1/audio/transcriptions: a 25 MiB file in a multipart form
    max_body_bytes=MAX_TRANSCRIPTION_AUDIO_BYTES + MIB,
    url_setting="stt",
)
TTS = ModelService(
    name="tts",
    deployment="TTSDeployment",
    # POST /tts/v1/audio/speech (80 KiB)
    max_body_bytes=MAX_SPEECH_INPUT_CHARS * UTF8_MAX_BYTES + BODY_FIELDS_SLACK,
    url_setting="tts",
)

MODEL_SERVICES: tuple[ModelService, ...] = (EMBEDDINGS, RERANKER, LLM, WHISPER, TTS)
"""Every model service, in the order the platform deploys them."""
