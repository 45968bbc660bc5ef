"""The voice app with the real models on the session's Ray cluster, over HTTP and handles.

The whole stack runs: the session's model apps (``model_apps``: embeddings, reranker,
LLM, Whisper and TTS from ray_inference), the chat app (its knowledge base a Milvus Lite
database in a temporary folder, answers at temperature 0) and the voice app. A question
about a made-up fact is spoken with Piper; the answer must hold the fact in its text and
in its speech.

The LLM writes about 40 tokens a second here, so the requests that reach it are few:
the spoken question is answered once whole over HTTP, once streamed over HTTP, and once
each way over the handle; the other tests stop the stream after the transcript, or use
silence (no LLM call) or bad input.
"""

import base64
import io
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import httpx
import pytest

from handler_base.audio import encode_wav, read_wav
from handler_base.clients import ChatClient, VoiceClient
from handler_base.errors import InvalidRequestError
from handler_base.messages import (
    ChatRequest,
    ChatResponse,
    VoiceAudioEvent,
    VoiceDoneEvent,
    VoiceRequest,
    VoiceResponse,
    VoiceTextEvent,
    VoiceTranscriptEvent,
)
from handler_base.settings import Settings
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe
from handler_base.testing.speech import convert_wav, silence_wav, speak, word_accuracy
from voice_assistant import build_app
from voice_assistant.assistant import NOTHING_HEARD_ANSWER

pytestmark = pytest.mark.integration

COLLECTION = "gadgets"
FACT_NUMBER = "417"
DOCUMENTS = [
    {
        "id": "zx41",
        "text": (
            "The ZX-41 flux capacitor costs 417 euros. It ships in teal. "
            "Dr. Okafor designed its housing."
        ),
        "metadata": {"title": "ZX-41 flux capacitor"},
    },
    {
        "id": "qp7",
        "text": "The QP-7 router blinks amber while its firmware updates. It weighs 2.3 kg.",
    },
    {"id": "hours", "text": "The support desk opens at 9 in the morning and closes at 5."},
]
QUESTION = "How much does the ZX-41 flux capacitor cost, and who designed it?"


@pytest.fixture(scope="module")
def stack(
    serve_instance: LocalServe, model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Deploy the chat and voice apps beside the models; ingest the corpus; the proxy's URL."""
    from ray import serve

    from chat_handler import build_app as build_chat

    data_dir = tmp_path_factory.mktemp("voice-data")
    milvus_uri = str(data_dir / "milvus.db")
    serve.run(
        build_chat({"milvus_uri": milvus_uri}),
        name="chat",
        route_prefix="/chat",
    )
    serve.run(build_app(), name="voice", route_prefix="/voice")
    try:
        response = httpx.post(
            f"{serve_instance.http_url}/chat/knowledge/documents",
            json={"collection": COLLECTION, "documents": DOCUMENTS},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        yield serve_instance.http_url
    finally:
        for name in ("voice", "chat"):
            serve.delete(name)


@pytest.fixture(scope="module")
def http(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{stack}/voice", timeout=300) as client:
        yield client


@cache
def question_wav() -> bytes:
    """The question spoken by Piper: 22,050 Hz mono 16-bit."""
    return speak(QUESTION)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    event, data = "", ""
    for line in lines:
        if not line:
            if data:
                yield event, json.loads(data)
            event, data = "", ""
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")


def assert_event_order(events: list[tuple[str, dict[str, Any]]]) -> None:
    """The stream's documented order (see the README): transcript, text before the audio
    of its sentence, audio in index order, done last."""
    names = [name for name, _ in events]
    assert names[0] == "transcript", names
    assert names[-1] == "done", names
    assert (names.count("transcript"), names.count("done")) == (1, 1), names
    assert {"text", "audio"} <= set(names), names
    assert names.index("text") < names.index("audio"), names
    written = ""
    indices = []
    for name, data in events:
        if name == "text":
            written += data["text"]
        elif name == "audio":
            indices.append(data["index"])
            # The sentence spoken is already written (up to the marks it does not speak).
            assert data["text"].split()[-1].strip(".,!?;:") in written, (data["text"], written)
    assert indices == list(range(len(indices))), indices
    assert written == events[-1][1]["response"]


def stream_events(
    http: httpx.Client, audio: bytes, **params: str
) -> list[tuple[str, dict[str, Any]]]:
    with http.stream(
        "POST", "/stream", content=audio, params=params, headers={"content-type": "audio/wav"}
    ) as response:
        assert response.status_code == 200, response.read().decode()
        return list(sse_events(response.iter_lines()))


def test_a_one_sentence_answer_streams_its_text_before_its_audio(http: httpx.Client) -> None:
    # An empty collection: the chat handler answers with its one-sentence reply.
    events = stream_events(http, question_wav(), collection="nothing_here")
    assert_event_order(events)
    assert [name for name, _ in events].count("audio") == 1
    # A question that was not heard: the same order, with the not-heard reply.
    events = stream_events(http, silence_wav(1.0))
    assert_event_order(events)
    assert events[-1][1]["response"] == NOTHING_HEARD_ANSWER


def assert_error(response: httpx.Response, code: str) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] == code, response.text


def says_the_fact(text: str) -> bool:
    """The price is in ``text``, as digits or in words (TTS reads "417" aloud)."""
    words = " ".join(text.lower().replace("-", " ").split())
    return (
        FACT_NUMBER in text
        or "four hundred and seventeen" in words
        or ("four hundred seventeen" in words)
    )


def transcribe(stack: str, audio: bytes) -> str:
    response = httpx.post(
        f"{stack}/whisper/v1/audio/transcriptions",
        files={"file": ("answer.wav", audio, "audio/wav")},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["text"])


@pytest.fixture(scope="module")
def whole_answer(http: httpx.Client) -> VoiceResponse:
    """``POST /voice`` with the spoken question as a multipart file."""
    response = http.post(
        "",
        files={"file": ("question.wav", question_wav(), "audio/wav")},
        data={"collection": COLLECTION, "top_n": "2", "request_id": "v-1"},
    )
    assert response.status_code == 200, response.text
    return VoiceResponse.model_validate(response.json())


def test_the_spoken_question_is_answered_in_text_and_speech(
    stack: str, whole_answer: VoiceResponse
) -> None:
    assert word_accuracy(QUESTION, whole_answer.transcript) >= 0.8, whole_answer.transcript
    assert FACT_NUMBER in whole_answer.response
    assert whole_answer.sources[0].metadata["doc_id"] == "zx41"
    assert whole_answer.request_id == "v-1"
    assert whole_answer.audio_format == "wav"
    spoken = read_wav(whole_answer.audio)
    assert spoken.sample_rate == whole_answer.sample_rate == 22_050
    assert spoken.duration_s > 1.0
    heard_back = transcribe(stack, whole_answer.audio)
    assert says_the_fact(heard_back), heard_back
    timings = whole_answer.timings_ms
    assert min(timings.stt, timings.generate, timings.tts) > 0
    assert timings.total >= timings.stt + timings.generate


def test_the_stream_speaks_sentence_by_sentence_before_the_text_is_complete(
    http: httpx.Client, whole_answer: VoiceResponse
) -> None:
    # Raw body, 16 kHz stereo this time (the fields as query parameters).
    audio = convert_wav(question_wav(), 16_000, channels=2)
    with http.stream(
        "POST",
        "/stream",
        content=audio,
        params={"collection": COLLECTION, "top_n": "2"},
        headers={"content-type": "audio/wav"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response.iter_lines()))
    assert_event_order(events)
    names = [name for name, _ in events]
    assert word_accuracy(QUESTION, events[0][1]["text"]) >= 0.8
    texts = [data["text"] for name, data in events if name == "text"]
    audios = [data for name, data in events if name == "audio"]
    done = events[-1][1]
    assert "".join(texts) == done["response"]
    assert FACT_NUMBER in done["response"]
    assert [a["index"] for a in audios] == list(range(len(audios)))
    assert done["sentences"] == len(audios) >= 2, done["response"]
    # The first sentence is spoken while the rest of the answer is still being written.
    last_text = max(i for i, name in enumerate(names) if name == "text")
    assert names.index("audio") < last_text
    # Sentences in order: each one's text is found in the answer after the one before.
    position = 0
    for sentence in (a["text"] for a in audios):
        found = done["response"].find(sentence.split()[0], position)
        assert found >= position, (sentence, done["response"])
        position = found
    for data in audios:
        assert read_wav(base64.b64decode(data["audio"])).sample_rate == data["sample_rate"]
    assert done["sources"][0]["metadata"]["doc_id"] == "zx41"
    assert done["first_audio_ms"] < done["timings_ms"]["total"]
    # The path to the first audio, in order: stt, rag, first text, first sentence, audio.
    t = done["timings_ms"]
    assert t["rag"] == pytest.approx(t["embed"] + t["search"] + t["rerank"])
    assert t["stt"] + t["rag"] < t["first_token"] <= t["first_sentence"]
    assert t["first_sentence"] + t["first_tts"] <= t["first_audio"] == done["first_audio_ms"]
    assert t["first_audio"] < t["total"]


async def test_the_handle_gives_the_same_answer(stack: str, whole_answer: VoiceResponse) -> None:
    request = VoiceRequest(audio=question_wav(), collection=COLLECTION, top_n=2)
    async with VoiceClient(mode="handle") as client:
        assert await client.path() == "handle"
        answer = await client.voice(request)
        assert answer.transcript == whole_answer.transcript
        assert answer.response == whole_answer.response
        assert [s.id for s in answer.sources] == [s.id for s in whole_answer.sources]
        events = [event async for event in client.voice_stream(request)]
    assert isinstance(events[0], VoiceTranscriptEvent)
    assert events[0].text == whole_answer.transcript
    done = events[-1]
    assert isinstance(done, VoiceDoneEvent)
    assert done.response == whole_answer.response
    text = "".join(e.text for e in events if isinstance(e, VoiceTextEvent))
    assert text == done.response
    spoken = [e for e in events if isinstance(e, VoiceAudioEvent)]
    assert [e.index for e in spoken] == list(range(done.sentences))


async def test_the_http_voice_client_reads_the_stream(
    stack: str, whole_answer: VoiceResponse
) -> None:
    """The JSON body (base64 audio, as NATS carries it), through the client's HTTP path."""
    settings = Settings(voice_url=f"{stack}/voice")
    async with VoiceClient(settings, mode="http") as client:
        events = client.voice_stream(VoiceRequest(audio=question_wav(), collection=COLLECTION))
        try:
            transcript, text = await anext(events), await anext(events)
        finally:
            await events.aclose()  # leaving early stops the answer
    assert isinstance(transcript, VoiceTranscriptEvent)
    assert transcript.text == whole_answer.transcript
    assert isinstance(text, VoiceTextEvent)


def first_event(http: httpx.Client, **request: Any) -> tuple[str, dict[str, Any]]:
    """The stream's first event; closing the stream then stops the answer."""
    with http.stream("POST", "/stream", **request) as response:
        assert response.status_code == 200, response.read().decode()
        return next(sse_events(response.iter_lines()))


def encode(wav: bytes, container: str, codec: str, rate: int) -> bytes:
    """``wav`` compressed with PyAV (FFmpeg), as a browser or a phone would send it."""
    import av
    from av.audio.stream import AudioStream

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, AudioStream)
        pcm = read_wav(convert_wav(wav, rate)).samples.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [("ogg", "libopus", 48_000), ("webm", "libopus", 48_000), ("mp3", "mp3", 22_050)],
)
def test_compressed_questions_are_heard(
    http: httpx.Client, container: str, codec: str, rate: int
) -> None:
    audio = encode(question_wav(), container, codec, rate)
    name, data = first_event(http, files={"file": (f"q.{container}", audio, "audio/ogg")})
    assert name == "transcript"
    assert word_accuracy(QUESTION, data["text"]) >= 0.8, data["text"]


def test_raw_pcm_in_a_json_body_is_heard(http: httpx.Client) -> None:
    spoken = read_wav(question_wav())
    name, data = first_event(
        http,
        json={
            "audio": base64.b64encode(spoken.samples.tobytes()).decode(),
            "format": "pcm_s16le",
            "sample_rate": spoken.sample_rate,
        },
    )
    assert name == "transcript"
    assert word_accuracy(QUESTION, data["text"]) >= 0.8, data["text"]


def test_silence_is_answered_that_nothing_was_heard(stack: str, http: httpx.Client) -> None:
    response = http.post("", content=silence_wav(2.0), headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    answer = VoiceResponse.model_validate(response.json())
    assert answer.transcript == ""
    assert answer.response == NOTHING_HEARD_ANSWER
    assert answer.sources == []
    assert "hear" in transcribe(stack, answer.audio).lower()
    raw = http.post(
        "",
        content=silence_wav(1.0),
        params={"response_format": "pcm"},
        headers={"content-type": "audio/wav"},
    )
    assert raw.status_code == 200, raw.text
    pcm = VoiceResponse.model_validate(raw.json())
    assert pcm.audio_format == "pcm"
    assert not pcm.audio.startswith(b"RIFF")
    # Raw samples at the answer's rate (Piper varies its timing, so not byte for byte).
    assert len(pcm.audio) % 2 == 0
    assert "hear" in transcribe(stack, encode_wav(pcm.audio, pcm.sample_rate)).lower()


@pytest.mark.parametrize(
    ("request_kwargs", "code"),
    [
        (
            {"content": b"this is not audio at all", "headers": {"content-type": "audio/wav"}},
            "invalid_request",
        ),
        ({"content": b"", "headers": {"content-type": "audio/wav"}}, "invalid_request"),
        (
            {
                "content": b"\x00\x00" * 16_000 * 301,
                "params": {"format": "pcm_s16le", "sample_rate": "16000"},
            },
            "too_large",
        ),
        ({"content": silence_wav(0.5, 4_000)}, "invalid_request"),
        ({"files": {"file": ("x.ogg", b"OggS" + b"\x01" * 200, "audio/ogg")}}, "invalid_request"),
        ({"json": {"audio": "%%%"}}, "invalid_request"),
        (
            {"content": b"{bad json", "headers": {"content-type": "application/json"}},
            "invalid_request",
        ),
    ],
)
@pytest.mark.parametrize("route", ["", "/stream"])
def test_bad_audio_gets_the_error_shape_and_the_next_request_is_answered(
    http: httpx.Client, route: str, request_kwargs: dict[str, Any], code: str
) -> None:
    assert_error(http.post(route, **request_kwargs), code)
    # Still serving, through Whisper and TTS (a silent question needs no LLM).
    response = http.post("", content=silence_wav(1.0), headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    answer = VoiceResponse.model_validate(response.json())
    assert answer.response == NOTHING_HEARD_ANSWER
    assert len(answer.audio) > 1000


def test_after_bad_input_a_good_request_is_answered(http: httpx.Client) -> None:
    assert_error(
        http.post("", content=b"garbage", headers={"content-type": "audio/wav"}), "invalid_request"
    )
    response = http.post("", content=silence_wav(1.0), headers={"content-type": "audio/wav"})
    assert response.status_code == 200, response.text
    assert response.json()["response"] == NOTHING_HEARD_ANSWER


async def test_bad_input_over_the_handle_raises_the_typed_error(stack: str) -> None:
    async with VoiceClient(mode="handle") as client:
        with pytest.raises(InvalidRequestError):
            await client.voice({"audio": base64.b64encode(b"not audio").decode()})
        with pytest.raises(InvalidRequestError):
            await client.voice({"audio": "", "format": "wav"})
        answer = await client.voice(VoiceRequest(audio=silence_wav(1.0)))
    assert answer.response == NOTHING_HEARD_ANSWER


async def test_the_chat_client_over_http(stack: str) -> None:
    """The voice app reaches the chat handler by handle; here its HTTP path is checked.

    An empty collection is answered without the LLM, and a bad filter fails in the search.
    """
    from chat_handler.rag import NO_SOURCES_ANSWER

    settings = Settings(chat_url=f"{stack}/chat")
    request = ChatRequest(query=QUESTION, collection="nothing_here")
    async with ChatClient(settings, mode="http") as chat:
        whole = await chat.chat(request)
        items = [item async for item in chat.chat_stream(request)]
        bad = ChatRequest(query=QUESTION, collection=COLLECTION, filter="doc_id === (")
        with pytest.raises(InvalidRequestError):
            await chat.chat(bad)
        with pytest.raises(InvalidRequestError):
            async for _ in chat.chat_stream(bad):
                pass
    assert whole.response == NO_SOURCES_ANSWER
    *pieces, last = items
    assert all(isinstance(piece, str) for piece in pieces)
    assert isinstance(last, ChatResponse)
    assert "".join(str(piece) for piece in pieces) == last.response == whole.response
