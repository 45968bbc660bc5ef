"""Client of the text-to-speech service (``/tts``): text in, WAV or raw PCM out."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from handler_base.clients.base import ServiceClient
from handler_base.errors import InternalError, error_from_validation
from handler_base.inference import MODEL_TIME_HEADER, SpeechAudio, SpeechRequest
from handler_base.services import TTS

SPEECH_ROUTE = "/v1/audio/speech"
DEFAULT_SAMPLE_RATE = 22_050
"""The rate assumed when an HTTP answer of raw PCM does not say its rate."""


class TTSClient(ServiceClient):
    """Speaks text through the ``TTSDeployment`` of the ``tts`` Serve app.

    Example:
        >>> async with TTSClient() as tts:  # doctest: +SKIP
        ...     speech = await tts.speak("Hello there.")
        ...     open("hello.wav", "wb").write(speech.audio)
    """

    model_service = TTS

    async def synthesize(self, request: SpeechRequest) -> SpeechAudio:
        """Answer one speech request.

        Both paths return the same :class:`SpeechAudio`: the handle path as the
        deployment made it, the HTTP path from the body and its ``X-Sample-Rate`` and
        ``X-Voice`` headers.

        Raises:
            PlatformError: ``invalid_request`` for a refused voice or nothing to speak,
                ``too_large`` for over-long text, or what the transport reports.
        """
        if await self.path() == "handle":
            result = await self._handle_call("synthesize", request)
            return SpeechAudio.model_validate(result)
        body = request.model_dump(mode="json", exclude_unset=True)
        response = await self._http_request("POST", SPEECH_ROUTE, json=body)
        rate = response.headers.get("X-Sample-Rate")
        try:
            fields = {
                "audio": response.content,
                "sample_rate": int(rate) if rate else DEFAULT_SAMPLE_RATE,
                "format": request.response_format,
                "voice": response.headers.get("X-Voice") or None,
            }
            return SpeechAudio.model_validate(
                self._with_model_time(fields, response.headers.get(MODEL_TIME_HEADER))
            )
        except (ValueError, ValidationError) as exc:
            raise InternalError(f"{self._target()} answered unusable audio: {exc}") from exc

    async def speak(
        self,
        text: str,
        *,
        voice: str | None = None,
        response_format: Literal["wav", "pcm"] = "wav",
        speed: float = 1.0,
    ) -> SpeechAudio:
        """Speak ``text``; see :meth:`synthesize`.

        Raises:
            PlatformError: As for :meth:`synthesize`, and ``invalid_request`` or
                ``too_large`` when the arguments break the request's limits.
        """
        try:
            request = SpeechRequest(
                input=text, voice=voice, response_format=response_format, speed=speed
            )
        except ValidationError as exc:
            raise error_from_validation(exc) from exc
        return await self.synthesize(request)
