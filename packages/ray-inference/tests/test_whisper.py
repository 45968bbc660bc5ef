"""Whisper: audio decoding and limits, the joined base model, and the deployment on Serve.

(The join itself is tested with ray_inference.model_sources, in test_model_sources.py.)

Speech comes from Piper with the packaged voice (handler_base.testing.speech); the
models are the packaged Whisper base (joined into a temporary data folder) and tiny.en.
Nothing is mocked.
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from handler_base.clients.stt import STTClient
from handler_base.errors import InvalidRequestError, TooLargeError
from handler_base.inference import MAX_TRANSCRIPTION_AUDIO_BYTES, TranscriptionOptions
from handler_base.testing.platform import SharedApps
from handler_base.testing.speech import (
    convert_wav,
    read_wav,
    silence_wav,
    speak,
    to_wav,
    word_accuracy,
)
from ray_inference.model_sources import MARKER_NAME
from ray_inference.whisper import (
    BASE_FOLDER,
    SAMPLE_RATE,
    WhisperConfig,
    WhisperTranscriber,
    build_app,
    decode_audio_bytes,
)

SENTENCE = (
    "The quick brown fox jumps over the lazy dog near the river. "
    "Please send the quarterly report to the finance team before Friday afternoon."
)
SHORT = "Please turn on the kitchen lights and open the garden door."
NOT_AUDIO = b"this is plain text, not a sound file at all\n" * 40


@pytest.fixture(scope="module")
def sentence_wav() -> bytes:
    return speak(SENTENCE)


@pytest.fixture(scope="module")
def short_wav() -> bytes:
    return speak(SHORT)


# --- helpers of the tests themselves --------------------------------------------------


def test_word_accuracy_counts_edits_after_normalizing() -> None:
    assert word_accuracy("Hello, World!", "hello world") == 1.0
    assert word_accuracy("a b c d", "a x c d") == 0.75
    assert word_accuracy("a b c d", "a b c d e") == 0.75
    assert word_accuracy("a b c d", "a c d") == 0.75
    assert word_accuracy("", "") == 1.0


# --- decoding and limits ----------------------------------------------------------------


def test_decode_resamples_any_rate_and_channel_count(sentence_wav: bytes) -> None:
    samples, rate = read_wav(sentence_wav)
    seconds = len(samples) / rate
    for wav in (
        sentence_wav,
        convert_wav(sentence_wav, 44_100, channels=2),
        convert_wav(sentence_wav, 8_000),
    ):
        decoded = decode_audio_bytes(wav)
        assert decoded.dtype == np.float32
        assert abs(len(decoded) / SAMPLE_RATE - seconds) < 0.01


@pytest.mark.parametrize(
    ("audio", "error", "words"),
    [
        (b"", InvalidRequestError, "empty"),
        (NOT_AUDIO, InvalidRequestError, "not audio"),
        (b"\x89PNG\r\n\x1a\n" + bytes(300), InvalidRequestError, "no audio stream"),
        (silence_wav(0.5)[:44], InvalidRequestError, "no samples"),
        (b"\0" * (MAX_TRANSCRIPTION_AUDIO_BYTES + 1), TooLargeError, "25 MiB"),
    ],
    ids=["empty", "text", "png", "header_only", "over_25_mib"],
)
def test_decode_refuses_bad_audio(audio: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        decode_audio_bytes(audio)


def test_decode_refuses_audio_over_the_duration_limit() -> None:
    with pytest.raises(TooLargeError, match=r"lasts 3\.0 s; the limit is 2 s"):
        decode_audio_bytes(silence_wav(3.0), max_audio_s=2)


# --- the builder ------------------------------------------------------------------------


def test_build_app_takes_the_profile_and_loads_nothing() -> None:
    cpu = build_app({"profile": "cpu", "model": "tiny.en"})._bound_deployment
    assert cpu.ray_actor_options is not None
    assert cpu.ray_actor_options["num_gpus"] == 0
    assert cpu.init_args[0].model == "tiny.en"
    assert cpu.init_args[0].device == "cpu"
    gpu = build_app({"profile": "gpu"})._bound_deployment
    assert gpu.ray_actor_options is not None
    assert gpu.ray_actor_options["num_gpus"] == 0.5
    assert (gpu.init_args[0].device, gpu.init_args[0].compute_type) == ("cuda", "float16")
    with pytest.raises(ValueError, match=r"tiny\.en"):
        build_app({"model": "large-v3"})


# --- tiny.en, in this process -----------------------------------------------------------


def test_tiny_en_loads_and_transcribes(short_wav: bytes) -> None:
    config = WhisperConfig(model="tiny.en", beam_size=1)
    tiny = WhisperTranscriber(config.model_dir(), beam_size=1)
    assert not tiny.multilingual
    result = tiny.transcribe(short_wav)
    assert word_accuracy(SHORT, result.text) >= 0.85, result.text
    assert result.language == "en"
    with pytest.raises(InvalidRequestError, match="English-only"):
        tiny.transcribe(short_wav, TranscriptionOptions(language="fr"))
    with pytest.raises(ValueError, match=r"default_language: .*English-only"):
        WhisperTranscriber(config.model_dir(), default_language="fr")


# --- the deployment on Serve --------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(model_apps: SharedApps) -> Path:
    return Path(model_apps.args("whisper")["data_dir"])


@pytest.fixture(scope="module")
def whisper_url(model_apps: SharedApps) -> str:
    return model_apps.url("whisper")


@pytest.fixture
async def http(whisper_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=whisper_url, timeout=120) as client:
        yield client


async def _post(http: httpx.AsyncClient, audio: bytes, **fields: str) -> httpx.Response:
    return await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.wav", audio, "audio/wav")},
        data=fields,
    )


def test_first_start_joined_base_into_the_data_folder(whisper_url: str, data_dir: Path) -> None:
    folder = data_dir / BASE_FOLDER
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert marker["files"]["model.bin"]["size"] == (folder / "model.bin").stat().st_size
    assert {"config.json", "tokenizer.json", "vocabulary.json"} <= set(marker["files"])


async def test_transcribes_piper_speech_and_detects_english(
    http: httpx.AsyncClient, sentence_wav: bytes
) -> None:
    response = await _post(http, sentence_wav)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"text", "language", "duration"}
    assert word_accuracy(SENTENCE, body["text"]) >= 0.85, body["text"]
    assert body["language"] == "en"
    samples, rate = read_wav(sentence_wav)
    assert body["duration"] == pytest.approx(len(samples) / rate, abs=0.05)


@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (8_000, 1)])
async def test_other_rates_and_channels_transcribe(
    http: httpx.AsyncClient, short_wav: bytes, rate: int, channels: int
) -> None:
    response = await _post(http, convert_wav(short_wav, rate, channels))
    assert response.status_code == 200, response.text
    assert word_accuracy(SHORT, response.json()["text"]) >= 0.85, response.text


async def test_silence_gives_an_empty_transcript(http: httpx.AsyncClient) -> None:
    response = await _post(http, to_wav(np.zeros(3 * 16_000), 16_000))
    assert response.status_code == 200, response.text
    assert response.json()["text"] == ""
    assert response.json()["duration"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("audio", "fields", "status", "code"),
    [
        (NOT_AUDIO, {}, 400, "invalid_request"),
        (b"", {}, 400, "invalid_request"),
        (None, {"language": "xx"}, 400, "invalid_request"),
        (None, {"language": "English"}, 400, "invalid_request"),
        (None, {"response_format": "srt"}, 400, "invalid_request"),
    ],
    ids=["not_audio", "empty", "unknown_language", "bad_language_code", "srt"],
)
async def test_bad_requests_get_the_error_shape(
    http: httpx.AsyncClient,
    short_wav: bytes,
    audio: bytes | None,
    fields: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = await _post(http, short_wav if audio is None else audio, **fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


async def test_after_bytes_that_are_not_audio_the_next_request_is_answered(
    http: httpx.AsyncClient, short_wav: bytes
) -> None:
    bad = await _post(http, NOT_AUDIO)
    assert bad.status_code == 400, bad.text
    assert "not audio" in bad.json()["error"]["message"]
    after = await _post(http, short_wav)
    assert after.status_code == 200, after.text
    assert word_accuracy(SHORT, after.json()["text"]) >= 0.85


async def test_over_25_mib_is_too_large(http: httpx.AsyncClient) -> None:
    response = await _post(http, b"\0" * (MAX_TRANSCRIPTION_AUDIO_BYTES + 2 * 1024**2))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"


async def test_no_file_field_and_not_multipart_are_invalid(http: httpx.AsyncClient) -> None:
    no_file = await http.post("/v1/audio/transcriptions", data={"language": "en"})
    raw = await http.post("/v1/audio/transcriptions", content=b"RIFF....")
    for response in (no_file, raw):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_request"


async def test_text_response_format(http: httpx.AsyncClient, short_wav: bytes) -> None:
    response = await _post(http, short_wav, response_format="text", language="en")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert word_accuracy(SHORT, response.text) >= 0.85


async def test_openai_client_works_unchanged(whisper_url: str, short_wav: bytes) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{whisper_url}/v1", api_key="unused") as client:
        result = await client.audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", short_wav, "audio/wav")
        )
    assert word_accuracy(SHORT, result.text) >= 0.85, result.text


async def test_stt_client_handle_and_http_agree(whisper_url: str, short_wav: bytes) -> None:
    options = TranscriptionOptions(language="en")
    async with (
        STTClient(mode="handle") as by_handle,
        STTClient(mode="http", base_url=whisper_url) as by_http,
    ):
        assert await by_handle.path() == "handle"
        from_handle = await by_handle.transcribe(short_wav, options)
        from_http = await by_http.transcribe(short_wav, options)
        # The JSON content agrees; each answer carries its own model time.
        assert from_handle.model_dump() == from_http.model_dump()
        for answer in (from_handle, from_http):
            assert answer.model_time_ms is not None
            assert answer.model_time_ms > 0
        assert word_accuracy(SHORT, from_handle.text) >= 0.85

        for client in (by_handle, by_http):
            with pytest.raises(InvalidRequestError, match="not audio"):
                await client.transcribe(NOT_AUDIO)
            with pytest.raises(TooLargeError):
                await client.transcribe(b"\0" * (MAX_TRANSCRIPTION_AUDIO_BYTES + 1))
        assert await by_handle.transcribe_text(silence_wav(1.0)) == ""
