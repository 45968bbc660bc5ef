"""Client of the voice handler (``/voice``): a spoken question in, a spoken answer out.

Inside Ray it calls ``VoiceDeployment.voice`` / ``voice_stream`` through a handle;
outside, ``POST {voice_url}`` and ``POST {voice_url}/stream`` with the VoiceRequest as
JSON (audio in base64). The stream's server-sent events are named by their type
(``transcript``, ``text``, ``audio``, ``done``; see :data:`~handler_base.messages.VoiceEvent`)::

    async with VoiceClient() as voice:
        answer = await voice.voice(VoiceRequest(audio=wav_bytes))
        async for event in voice.voice_stream(VoiceRequest(audio=wav_bytes)):
            if isinstance(event, VoiceAudioEvent):
                play(event.audio)  # one sentence, in order
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError

from handler_base.clients.base import ServerSentEvent, ServiceClient
from handler_base.errors import InternalError, validate_as
from handler_base.messages import VoiceEvent, VoiceRequest, VoiceResponse

_EVENT: TypeAdapter[VoiceEvent] = TypeAdapter(VoiceEvent)


def voice_event_of(item: Any) -> VoiceEvent:
    """A stream item (an event model, or its dict with ``type``) as a typed VoiceEvent.

    Raises:
        ValidationError: It is not one of the voice events.
    """
    return _EVENT.validate_python(item)


class VoiceClient(ServiceClient):
    """Spoken answers from the ``VoiceDeployment`` of the ``voice`` app (handle, then HTTP)."""

    service: ClassVar[str] = "voice"
    app_name: ClassVar[str] = "voice"
    deployment_name: ClassVar[str] = "VoiceDeployment"
    passes_trace_context: ClassVar[bool] = True
    route: ClassVar[str] = ""
    """``POST /voice`` itself (the bare prefix)."""
    stream_route: ClassVar[str] = "/stream"

    async def voice(self, request: VoiceRequest | Mapping[str, Any]) -> VoiceResponse:
        """The transcript, the answer as text and as audio, its sources and timings.

        Raises:
            InvalidRequestError: Empty audio, audio that cannot be decoded, a bad field.
            TooLargeError: Audio over the size or duration limit.
            PlatformError: What the voice handler or a service behind it reported.
        """
        result = await self._call("voice", validate_as(VoiceRequest, request), self.route)
        return VoiceResponse.model_validate(result)

    async def voice_stream(
        self, request: VoiceRequest | Mapping[str, Any]
    ) -> AsyncGenerator[VoiceEvent, None]:
        """The answer as events: ``transcript``, ``text`` pieces, ``audio`` per sentence, ``done``.

        Close the generator (``aclose()``) when leaving it early: the voice handler
        then stops.

        Raises:
            PlatformError: As for :meth:`voice`, before or during the stream.
        """
        items = self._stream("voice_stream", validate_as(VoiceRequest, request), self.stream_route)
        try:
            async for item in items:
                try:
                    yield voice_event_of(item)
                except ValidationError as exc:
                    raise InternalError(f"{self._target()} sent an unknown event: {exc}") from exc
        finally:
            await items.aclose()

    def _decode_event(self, event: ServerSentEvent) -> Any:
        """The event's JSON ``data`` with its name as ``type``; errors raised as typed."""
        data = super()._decode_event(event)
        if isinstance(data, dict) and event.event is not None:
            return {**data, "type": event.event}
        raise InternalError(f"{self._target()} sent an event that is not a voice event")


__all__ = ["VoiceClient", "voice_event_of"]
