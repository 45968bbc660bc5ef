"""The voice deployment: ``POST /voice`` and ``POST /voice/stream``, and its handle methods.

A request carries the spoken question one of three ways:

- ``multipart/form-data``: the audio as the ``file`` field, the other VoiceRequest fields
  (``format``, ``sample_rate``, ``collection``, ``top_k``, ``top_n``, ``voice``,
  ``response_format``, ``request_id``) as form fields;
- a raw audio body (``audio/wav``, ``audio/ogg``, ``application/octet-stream``...), the
  other fields as query parameters;
- ``application/json``: a whole VoiceRequest, audio in base64 (what NATS carries).

Handle methods, for the NATS bridge: :meth:`VoiceDeployment.voice` (a whole
VoiceResponse) and :meth:`VoiceDeployment.voice_stream` (the events; call it with
``handle.options(stream=True)``). Both take a VoiceRequest or a mapping of one.
"""

# No `from __future__ import annotations`: through `serve.ingress`, FastAPI must see the
# routes' annotations themselves, not their names.

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application
from starlette.datastructures import UploadFile

from handler_base.clients import ChatClient, KnowledgeClient, STTClient, TTSClient
from handler_base.deployment import VOICE_BODY_BYTES, HandlerArgs, bind_deployment
from handler_base.errors import (
    InvalidRequestError,
    TooLargeError,
    error_from_validation,
    validate_as,
)
from handler_base.http import (
    BINARY_SCHEMA,
    configure_guard,
    file_upload_openapi,
    platform_app,
    sse_event,
    stream_events,
)
from handler_base.messages import MAX_AUDIO_BYTES, VoiceEvent, VoiceRequest, VoiceResponse
from handler_base.settings import Settings
from handler_base.telemetry import continue_trace, setup_telemetry
from voice_assistant.assistant import VoiceAssistant, VoiceConfig

logger = logging.getLogger(__name__)

MAX_FORM_BODY_BYTES = MAX_AUDIO_BYTES + 64 * 1024
"""A multipart body: the audio file and its form fields."""
FILE_FIELD = "file"

api: FastAPI = platform_app(
    "Voice",
    "A spoken question answered from the knowledge base, in text and speech.",
    max_body_bytes=VOICE_BODY_BYTES,
)

_BODY_DOC = file_upload_openapi(
    {
        "format": {"type": "string", "enum": ["wav", "pcm_s16le"]},
        "sample_rate": {"type": "integer"},
        "collection": {"type": "string"},
        "top_k": {"type": "integer"},
        "top_n": {"type": "integer"},
        "voice": {"type": "string"},
        "response_format": {"type": "string", "enum": ["wav", "pcm"]},
        "request_id": {"type": "string"},
    },
    file_field=FILE_FIELD,
    other_content={
        "audio/wav": {"schema": BINARY_SCHEMA},
        "application/json": {"schema": VoiceRequest.model_json_schema()},
    },
)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused as ``too_large`` once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"the request body has {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def voice_request_of(request: Request) -> VoiceRequest:
    """The VoiceRequest of an HTTP request: multipart, raw audio or JSON (module doc).

    Raises:
        InvalidRequestError: No audio, or a field that is not valid.
        TooLargeError: The audio or the body is over its limit.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        # The request guard already holds the body to VOICE_BODY_BYTES, the largest JSON.
        body = await request.body()
        try:
            return VoiceRequest.model_validate_json(body)
        except ValidationError as exc:
            raise error_from_validation(exc) from exc
    fields: dict[str, Any]
    if media_type == "multipart/form-data":
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM_BODY_BYTES:
            raise TooLargeError(
                f"the request body has {declared} bytes; the limit is {MAX_FORM_BODY_BYTES}"
            )
        form = await request.form(max_files=1, max_fields=32)
        upload = form.get(FILE_FIELD)
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError(f"send the audio as the multipart file field {FILE_FIELD!r}")
        audio = await upload.read(MAX_AUDIO_BYTES + 1)
        fields = {k: v for k, v in form.multi_items() if k != FILE_FIELD}
    else:
        audio = await _read_body(request, MAX_AUDIO_BYTES + 1)
        fields = dict(request.query_params)
    return validate_as(VoiceRequest, {**fields, "audio": audio})


def _sse_of(event: VoiceEvent) -> str:
    """The event as SSE: named by its type, the other fields as the JSON data."""
    return sse_event(event.model_dump(mode="json", exclude={"type"}), event=event.type)


class VoiceArgs(VoiceConfig, HandlerArgs):
    """Builder arguments of the voice application (the Serve config's ``args``)."""

    model_config = ConfigDict(extra="forbid")

    max_ongoing_requests: int = Field(default=16, ge=1)
    max_queued_requests: int = Field(default=64, ge=1)


@serve.deployment(name="VoiceDeployment")
@serve.ingress(api)
class VoiceDeployment:
    """Answers spoken questions: Whisper, then the chat handler's RAG stream, then TTS."""

    def __init__(self, args: VoiceArgs) -> None:
        """Make the clients (nothing is connected until the first request).

        Args:
            args: The assistant's voice, language and limits, and the replica's
                request guard limits.
        """
        settings = Settings()
        configure_guard(api, args.admission(), settings)
        setup_telemetry(settings, service_name="voice-assistant")
        self.assistant = VoiceAssistant(
            STTClient(settings),
            ChatClient(settings),
            TTSClient(settings),
            args,
            KnowledgeClient(settings) if args.hotwords else None,
        )

    # --- handle methods -----------------------------------------------------------------

    @continue_trace
    async def voice(self, request: VoiceRequest | Mapping[str, Any]) -> VoiceResponse:
        """The whole answer to ``request``: transcript, text, audio, sources, timings.

        Raises:
            PlatformError: A bad request, or a service that failed.
        """
        return await self.assistant.answer(validate_as(VoiceRequest, request))

    @continue_trace
    async def voice_stream(
        self, request: VoiceRequest | Mapping[str, Any]
    ) -> AsyncIterator[VoiceEvent]:
        """The answer as events: transcript, text pieces, audio per sentence, done.

        Raises:
            PlatformError: A bad request, or a service that failed.
        """
        events = self.assistant.stream(validate_as(VoiceRequest, request))
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    # --- HTTP routes ----------------------------------------------------------------------

    @api.post("/", response_model=VoiceResponse, openapi_extra=_BODY_DOC)
    async def post_voice(self, request: Request) -> VoiceResponse:
        """``POST /voice``: one VoiceResponse with the whole answer's audio."""
        return await self.assistant.answer(await voice_request_of(request))

    @api.post("/stream", response_model=None, openapi_extra=_BODY_DOC)
    async def post_voice_stream(self, request: Request) -> StreamingResponse:
        """``POST /voice/stream``: SSE ``transcript``, ``text``, ``audio``, then ``done``."""
        body = await voice_request_of(request)
        return await stream_events(
            self.assistant.stream(body),
            _sse_of,
            failure="the voice answer failed",
            error_event="error",
        )


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The voice application (``import_path: voice_assistant:build_app``, route ``/voice``).

    Args:
        args: :class:`VoiceArgs` fields.

    Returns:
        The bound deployment; nothing is connected until a replica starts.
    """
    return bind_deployment(VoiceDeployment, VoiceArgs.model_validate(args or {}))
