"""The voice flow: transcribe, ask the chat handler, speak the answer sentence by sentence.

:class:`VoiceAssistant` is plain asyncio over three clients, so it runs the same in a
Serve replica (handles) and outside Ray (HTTP). The answer is a pipeline of two tasks:

- the *writer* reads the chat handler's token stream, passes each piece on as a
  ``text`` event and cuts the text into sentences (:class:`SentenceSplitter`);
- the *speaker* takes the sentences from a queue, one at a time, in order, and
  synthesizes each while the writer is already receiving the next one.

So the first sentence is heard while the rest of the answer is still being generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable

from pydantic import BaseModel, ConfigDict, Field

from handler_base.audio import encode_wav
from handler_base.clients import ChatClient, KnowledgeClient, STTClient, TTSClient
from handler_base.errors import InternalError, validate_as
from handler_base.inference import SpeechAudio, SpeechRequest, TranscriptionOptions
from handler_base.messages import (
    ChatRequest,
    ChatResponse,
    VoiceAudioEvent,
    VoiceDoneEvent,
    VoiceEvent,
    VoiceRequest,
    VoiceResponse,
    VoiceTextEvent,
    VoiceTimings,
    VoiceTranscriptEvent,
)
from handler_base.telemetry import span
from voice_assistant.audio_in import DEFAULT_MAX_AUDIO_S, audio_file_of
from voice_assistant.hotwords import DEFAULT_TTL_S, HotwordsCache
from voice_assistant.sentences import DEFAULT_MAX_SENTENCE_CHARS, SentenceSplitter, speakable

logger = logging.getLogger(__name__)

NOTHING_HEARD_ANSWER = "Sorry, I did not hear anything. Please ask again."
"""The answer, written and spoken, to audio with no speech in it."""
NOTHING_TO_SAY_ANSWER = "Sorry, I have no answer to say."
"""Spoken when the written answer has nothing speakable in it (empty, or only marks)."""

_WORD = re.compile(r"\w")


class VoiceConfig(BaseModel):
    """Settings of a :class:`VoiceAssistant`.

    Attributes:
        voice: TTS voice of requests that name none; the TTS deployment's default when None.
        language: Language of the questions (ISO-639-1); when None, the Whisper
            deployment's ``default_language`` (``en`` in its application), or detected.
        max_audio_s: Longest question, in seconds (raw PCM and WAV; compressed audio is
            held to the Whisper deployment's own limit).
        max_sentence_chars: Longest piece of text sent to TTS at once.
        first_clause_chars: When set, the answer's first sentence is sent to TTS early,
            cut after its first comma, semicolon or colon that ends at least this many
            characters in (the rest follows as the next piece); None waits for the whole
            first sentence.
        nothing_heard_answer: The answer to audio without speech.
        hotwords: Give Whisper the request's collection vocabulary (its names and rare
            terms, gathered at ingest) as ``hotwords``, so that it hears the knowledge
            base's names (:mod:`voice_assistant.hotwords`).
        hotwords_ttl_s: How long a collection's vocabulary is used before it is asked
            for again.
    """

    model_config = ConfigDict(extra="forbid")

    voice: str | None = None
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    max_audio_s: float = Field(default=DEFAULT_MAX_AUDIO_S, gt=0)
    max_sentence_chars: int = Field(default=DEFAULT_MAX_SENTENCE_CHARS, ge=20, le=4096)
    first_clause_chars: int | None = Field(default=None, ge=1, le=4096)
    nothing_heard_answer: str = Field(default=NOTHING_HEARD_ANSWER, min_length=1)
    hotwords: bool = True
    hotwords_ttl_s: float = Field(default=DEFAULT_TTL_S, gt=0)


class _Spoken(BaseModel):
    """One sentence synthesized: raw mono ``s16le`` samples and their rate."""

    index: int
    text: str
    pcm: bytes
    sample_rate: int
    tts_ms: float


_END = object()
"""Put on the event queue by each pipeline task when it is over."""


class VoiceAssistant:
    """Answers a spoken question with text and speech (see the module doc).

    Attributes:
        stt: Transcribes the question.
        chat: Answers it from the knowledge base (RAG), as a token stream.
        tts: Speaks the answer.
        config: The assistant's settings.
        hotwords: Each collection's vocabulary for Whisper; None when ``config.hotwords``
            is off or no knowledge client was given.
    """

    def __init__(
        self,
        stt: STTClient,
        chat: ChatClient,
        tts: TTSClient,
        config: VoiceConfig | None = None,
        knowledge: KnowledgeClient | None = None,
    ) -> None:
        """Make an assistant over the given clients (nothing is called yet).

        ``knowledge`` reads the collections' vocabularies for Whisper's ``hotwords``.
        """
        self.stt = stt
        self.chat = chat
        self.tts = tts
        self.config = config or VoiceConfig()
        self.hotwords = (
            HotwordsCache(knowledge, ttl_s=self.config.hotwords_ttl_s)
            if knowledge is not None and self.config.hotwords
            else None
        )

    async def aclose(self) -> None:
        """Close the clients' HTTP connection pools."""
        clients: list[STTClient | ChatClient | TTSClient | KnowledgeClient] = [
            self.stt,
            self.chat,
            self.tts,
        ]
        if self.hotwords is not None:
            await self.hotwords.aclose()
            clients.append(self.hotwords.knowledge)
        for client in clients:
            await client.aclose()

    async def answer(self, request: VoiceRequest) -> VoiceResponse:
        """The whole answer: transcript, text, one audio file, sources and timings.

        It runs the same pipeline as :meth:`stream`, so synthesis still overlaps
        generation; the sentences' audio is joined into one file at the end.

        Raises:
            PlatformError: A bad request (``invalid_request``, ``too_large``), or a
                service that failed, as its typed error.
        """
        transcript = ""
        spoken: list[VoiceAudioEvent] = []
        done: VoiceDoneEvent | None = None
        async for event in self._events(request, pcm_out=True):
            if isinstance(event, VoiceTranscriptEvent):
                transcript = event.text
            elif isinstance(event, VoiceAudioEvent):
                spoken.append(event)
            elif isinstance(event, VoiceDoneEvent):
                done = event
        if done is None or not spoken:
            raise InternalError("the voice answer ended without its audio")
        rate = spoken[0].sample_rate
        if any(event.sample_rate != rate for event in spoken):
            raise InternalError("the sentences of the answer came at different sample rates")
        pcm = b"".join(event.audio for event in spoken)
        audio = pcm if request.response_format == "pcm" else encode_wav(pcm, rate)
        return VoiceResponse(
            transcript=transcript,
            response=done.response,
            sources=done.sources,
            audio=audio,
            sample_rate=rate,
            audio_format=request.response_format,
            request_id=request.request_id,
            timings_ms=done.timings_ms,
        )

    async def stream(self, request: VoiceRequest) -> AsyncGenerator[VoiceEvent, None]:
        """The answer as events: ``transcript``, ``text`` pieces, ``audio`` per sentence, ``done``.

        ``audio`` events come in the order of the sentences, each as soon as it is
        synthesized, while later text is still being generated. Close the generator
        (``aclose()``) when leaving early: generation and synthesis then stop.

        Raises:
            PlatformError: As for :meth:`answer`, before or during the stream.
        """
        events = self._events(request, pcm_out=request.response_format == "pcm")
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    # --- the flow -------------------------------------------------------------------------

    async def _events(
        self, request: VoiceRequest, *, pcm_out: bool
    ) -> AsyncGenerator[VoiceEvent, None]:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        audio = audio_file_of(request, self.config.max_audio_s)
        with span("voice.stt", {"audio.bytes": len(audio)}, timings=timings, key="stt"):
            hotwords = (
                None if self.hotwords is None else await self.hotwords.hotwords(request.collection)
            )
            options = TranscriptionOptions(language=self.config.language, hotwords=hotwords)
            heard = await self.stt.transcribe(audio, options)
        transcript = heard.text.strip()
        yield VoiceTranscriptEvent(text=transcript, language=heard.language)

        def audio_event(spoken: _Spoken) -> VoiceAudioEvent:
            return VoiceAudioEvent(
                index=spoken.index,
                text=spoken.text,
                audio=spoken.pcm if pcm_out else encode_wav(spoken.pcm, spoken.sample_rate),
                sample_rate=spoken.sample_rate,
                audio_format="pcm" if pcm_out else "wav",
            )

        if not _WORD.search(transcript):
            logger.info("no speech in the audio of request %s", request.request_id)
            reply = self.config.nothing_heard_answer
            yield VoiceTextEvent(text=reply)
            with span("voice.tts", timings=timings, key="tts"):
                said = await self._speak(0, reply, request)
            heard_nothing_ms = _ms_since(started)
            yield audio_event(said)
            timings.update(first_tts=said.tts_ms, first_audio=heard_nothing_ms)
            timings["total"] = _ms_since(started)
            yield VoiceDoneEvent(
                transcript=transcript,
                response=reply,
                sentences=1,
                first_audio_ms=heard_nothing_ms,
                request_id=request.request_id,
                timings_ms=VoiceTimings.model_validate(timings),
            )
            return

        # validate_as: a transcript over the chat's query limit is `too_large`, not a crash.
        chat_request = validate_as(
            ChatRequest,
            {
                "query": transcript,
                "collection": request.collection,
                "top_k": request.top_k,
                "top_n": request.top_n,
                "request_id": request.request_id,
            },
        )
        answer: ChatResponse | None = None
        first_audio_ms: float | None = None
        tts_ms: list[float] = []
        spoken_answer = self._spoken_answer(chat_request, request, started, timings)
        async with contextlib.aclosing(spoken_answer) as items:
            async for item in items:
                if isinstance(item, ChatResponse):
                    answer = item
                elif isinstance(item, _Spoken):
                    if first_audio_ms is None:
                        first_audio_ms = _ms_since(started)
                        timings.update(first_tts=item.tts_ms, first_audio=first_audio_ms)
                    tts_ms.append(item.tts_ms)
                    yield audio_event(item)
                else:
                    yield item
        if answer is None:
            raise InternalError("the chat handler's stream ended without its answer")
        chat_ms = answer.timings_ms
        timings.update(embed=chat_ms.embed, search=chat_ms.search, rerank=chat_ms.rerank)
        timings["rag"] = chat_ms.embed + chat_ms.search + chat_ms.rerank
        timings["generate"] = chat_ms.generate
        timings["tts"] = sum(tts_ms)
        timings["total"] = _ms_since(started)
        yield VoiceDoneEvent(
            transcript=transcript,
            response=answer.response,
            sources=answer.sources,
            sentences=len(tts_ms),
            first_audio_ms=first_audio_ms,
            request_id=request.request_id,
            timings_ms=VoiceTimings.model_validate(timings),
        )

    async def _spoken_answer(
        self,
        chat_request: ChatRequest,
        request: VoiceRequest,
        started: float,
        timings: dict[str, float],
    ) -> AsyncGenerator[VoiceTextEvent | _Spoken | ChatResponse, None]:
        """The chat answer as text events and spoken sentences, as they come; then the answer.

        Two tasks (see the module doc): the writer reads the token stream and queues the
        sentences, the speaker synthesizes them in order. Their output meets in one queue.
        The writer marks in ``timings`` when the first text and the first sentence came
        (``first_token``, ``first_sentence``: milliseconds since ``started``).
        """
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        queue: asyncio.Queue[VoiceTextEvent | _Spoken | BaseException | object] = asyncio.Queue()
        answers: list[ChatResponse] = []

        async def write() -> None:
            splitter = SentenceSplitter(
                self.config.max_sentence_chars, self.config.first_clause_chars
            )

            def send(done: list[str]) -> None:
                if done:
                    timings.setdefault("first_sentence", _ms_since(started))
                for sentence in done:
                    sentences.put_nowait(sentence)

            async with contextlib.aclosing(self.chat.chat_stream(chat_request)) as pieces:
                async for item in pieces:
                    if isinstance(item, ChatResponse):
                        answers.append(item)
                    elif item:
                        timings.setdefault("first_token", _ms_since(started))
                        queue.put_nowait(VoiceTextEvent(text=item))
                        send(splitter.feed(item))
            send(splitter.flush())

        async def speak() -> None:
            index = 0
            while (sentence := await sentences.get()) is not None:
                text = speakable(sentence)
                if text:
                    with span("voice.tts.sentence", {"sentence.index": index}):
                        queue.put_nowait(await self._speak(index, text, request))
                    index += 1
            if index == 0:
                # Nothing speakable in the answer (empty, or only marks): say so, not silence.
                logger.warning("the answer to %s had nothing to speak", request.request_id)
                queue.put_nowait(await self._speak(0, NOTHING_TO_SAY_ANSWER, request))

        async def run(work: Awaitable[None], then: asyncio.Queue[str | None] | None) -> None:
            try:
                await work
            except Exception as exc:
                queue.put_nowait(exc)
            finally:
                if then is not None:
                    then.put_nowait(None)  # the speaker finishes what was written
                queue.put_nowait(_END)

        tasks = [
            asyncio.create_task(run(write(), sentences), name="voice-writer"),
            asyncio.create_task(run(speak(), None), name="voice-speaker"),
        ]
        try:
            running = len(tasks)
            while running:
                item = await queue.get()
                if item is _END:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                elif isinstance(item, VoiceTextEvent | _Spoken):
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if answers:
            yield answers[-1]

    async def _speak(self, index: int, text: str, request: VoiceRequest) -> _Spoken:
        """Synthesize one sentence as raw PCM."""
        voice = request.voice or self.config.voice
        start = time.perf_counter()
        speech: SpeechAudio = await self.tts.synthesize(
            SpeechRequest(input=text, voice=voice, response_format="pcm")
        )
        return _Spoken(
            index=index,
            text=text,
            pcm=speech.audio,
            sample_rate=speech.sample_rate,
            tts_ms=_ms_since(start),
        )


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000
