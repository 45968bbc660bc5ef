"""Whisper's ``hotwords``: a knowledge base's names, heard right when Whisper is told them.

Real speech (espeak-ng and the packaged Piper voice) of a question with an invented name,
transcribed by the packaged Whisper base: in this process, and through the deployment
(form field over HTTP, the STT client by handle and over HTTP). Nothing is mocked.
"""

from collections.abc import AsyncIterator

import httpx
import pytest

from handler_base.clients.stt import STTClient
from handler_base.inference import MAX_HOTWORDS_CHARS, TranscriptionOptions
from handler_base.testing.platform import SharedApps
from handler_base.testing.speech import normalize_words, silence_wav, speak
from ray_inference.whisper import WhisperConfig, WhisperTranscriber

QUESTION = "Which pier does the ferry to Kelvington Island leave from?"
HOTWORDS = "Kelvington Island Harwick Marren Point ferry pier slipway"
"""What the answer set's ferry timetable would give (names first, then rare words)."""


def heard_the_name(text: str) -> bool:
    return "kelvington" in normalize_words(text)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> WhisperTranscriber:
    folder = WhisperConfig(data_dir=str(tmp_path_factory.mktemp("whisper-data"))).model_dir()
    return WhisperTranscriber(folder, default_language="en")


@pytest.mark.parametrize("voice", ["espeak-ng", None], ids=["espeak-ng", "piper"])
def test_base_hears_the_name_only_with_the_hotwords(
    base: WhisperTranscriber, voice: str | None
) -> None:
    audio = speak(QUESTION, voice)
    without = base.transcribe(audio).text
    with_hotwords = base.transcribe(audio, TranscriptionOptions(hotwords=HOTWORDS)).text
    assert heard_the_name(with_hotwords), with_hotwords
    # Whisper base has never heard of the island: told nothing, it writes another word
    # (espeak-ng: "Kelvin to Highland"; Piper: "Covington" or "Colvington").
    assert not heard_the_name(without), without


def test_hotwords_do_not_put_words_into_silence_or_other_speech(base: WhisperTranscriber) -> None:
    options = TranscriptionOptions(hotwords=HOTWORDS)
    assert base.transcribe(silence_wav(2.0), options).text == ""
    other = base.transcribe(speak("Please open the garden door."), options).text
    assert normalize_words(other) == ["please", "open", "the", "garden", "door"], other


def test_hotwords_are_bounded() -> None:
    TranscriptionOptions(hotwords="x" * MAX_HOTWORDS_CHARS)
    with pytest.raises(ValueError, match="at most"):
        TranscriptionOptions(hotwords="x" * (MAX_HOTWORDS_CHARS + 1))


# --- through the deployment ----------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper_url(model_apps: SharedApps) -> str:
    return model_apps.url("whisper")


@pytest.fixture
async def http(whisper_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=whisper_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def piper_question() -> bytes:
    return speak(QUESTION)


async def test_the_route_takes_the_hotwords_form_field(
    http: httpx.AsyncClient, piper_question: bytes
) -> None:
    async def post(**fields: str) -> str:
        response = await http.post(
            "/v1/audio/transcriptions",
            files={"file": ("q.wav", piper_question, "audio/wav")},
            data=fields,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["text"])

    assert heard_the_name(await post(hotwords=HOTWORDS))
    assert not heard_the_name(await post())
    assert not heard_the_name(await post(hotwords=""))  # an empty field is no hotwords

    response = await http.post(
        "/v1/audio/transcriptions",
        files={"file": ("q.wav", piper_question, "audio/wav")},
        data={"hotwords": "x" * (MAX_HOTWORDS_CHARS + 1)},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"


async def test_the_stt_client_passes_hotwords_by_handle_and_over_http(
    whisper_url: str, piper_question: bytes
) -> None:
    options = TranscriptionOptions(hotwords=HOTWORDS)
    async with (
        STTClient(mode="handle") as by_handle,
        STTClient(mode="http", base_url=whisper_url) as by_http,
    ):
        from_handle = await by_handle.transcribe(piper_question, options)
        from_http = await by_http.transcribe(piper_question, options)
        assert heard_the_name(from_handle.text), from_handle.text
        assert from_handle.text == from_http.text
        assert heard_the_name(await by_http.transcribe_text(piper_question, hotwords=HOTWORDS))
