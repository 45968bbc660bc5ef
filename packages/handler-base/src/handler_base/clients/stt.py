"""Client of the speech-to-text service (``/whisper``): audio bytes in, a transcript out."""

from __future__ import annotations

from typing import ClassVar

from handler_base.clients.base import ServiceClient
from handler_base.errors import InternalError, InvalidRequestError, TooLargeError
from handler_base.inference import (
    MAX_TRANSCRIPTION_AUDIO_BYTES,
    MODEL_TIME_HEADER,
    TranscriptionOptions,
    TranscriptionResponse,
)
from handler_base.services import WHISPER


class STTClient(ServiceClient):
    """Transcribes audio with the Whisper deployment: by handle inside Ray, else HTTP.

    The handle path calls ``WhisperDeployment.transcribe(audio, options)``; the HTTP path
    posts the OpenAI multipart form to ``/v1/audio/transcriptions``. Both answer the
    same :class:`~handler_base.inference.TranscriptionResponse`.

    Example::

        async with STTClient() as stt:
            result = await stt.transcribe(wav_bytes)
            print(result.text, result.language)
    """

    model_service = WHISPER
    route: ClassVar[str] = "/v1/audio/transcriptions"

    async def transcribe(
        self,
        audio: bytes,
        options: TranscriptionOptions | None = None,
        *,
        filename: str = "audio",
    ) -> TranscriptionResponse:
        """Transcribe one audio file.

        Args:
            audio: The file's bytes: WAV, MP3, Ogg/Opus, FLAC, WebM... (the service
                decodes and resamples it).
            options: Language (detected when None), a prompt, and ``hotwords``: words
                to listen for, such as a knowledge base's names (``KnowledgeClient.vocabulary``);
                sent as the form field of the same name over HTTP.
            filename: The file name sent over HTTP (informative only).

        Returns:
            The text (empty for silence), the language and the audio's duration (s).

        Raises:
            InvalidRequestError: Empty audio, bytes that are not audio, unknown language.
            TooLargeError: Over 25 MiB (checked before sending) or over the duration limit.
            PlatformError: Whatever else went wrong, as its typed error.
        """
        if not audio:
            raise InvalidRequestError("the audio file is empty")
        if len(audio) > MAX_TRANSCRIPTION_AUDIO_BYTES:
            raise TooLargeError(
                f"the audio file has {len(audio)} bytes; the limit is "
                f"{MAX_TRANSCRIPTION_AUDIO_BYTES} ({MAX_TRANSCRIPTION_AUDIO_BYTES // 1024**2} MiB)"
            )
        if await self.path() == "handle":
            result = await self._handle_call("transcribe", audio, options)
            return TranscriptionResponse.model_validate(result)
        fields = {} if options is None else options.model_dump(mode="json", exclude_none=True)
        response = await self._http_request(
            "POST",
            self.route,
            files={"file": (filename, audio, "application/octet-stream")},
            data={"response_format": "json", **fields},
        )
        try:
            body = self._with_model_time(response.json(), response.headers.get(MODEL_TIME_HEADER))
            return TranscriptionResponse.model_validate(body)
        except ValueError as exc:
            raise InternalError(
                f"{self._target()} answered {self.route} with no transcription"
            ) from exc

    async def transcribe_text(
        self, audio: bytes, language: str | None = None, hotwords: str | None = None
    ) -> str:
        """Just the text of :meth:`transcribe` (empty for silence).

        Args:
            audio: The file's bytes.
            language: ISO-639-1 code; detected when None.
            hotwords: Words to listen for, space-separated; none when None.
        """
        options = TranscriptionOptions(language=language, hotwords=hotwords)
        return (await self.transcribe(audio, options)).text
