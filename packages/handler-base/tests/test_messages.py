import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from handler_base.errors import ErrorCode, error_from_validation
from handler_base.messages import (
    MAX_AUDIO_BYTES,
    MAX_HISTORY_MESSAGES,
    MAX_QUERY_CHARS,
    ChatRequest,
    ChatResponse,
    HistoryMessage,
    PipelineRunAccepted,
    PipelineRunState,
    PipelineRunStatus,
    PipelineStatusEvent,
    PipelineTrigger,
    Source,
    VoiceRequest,
    VoiceResponse,
)


def error_code(model: type, payload: object) -> ErrorCode:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps(payload))  # type: ignore[attr-defined]
    return error_from_validation(caught.value).code


def test_chat_request_defaults_follow_the_contract() -> None:
    request = ChatRequest.model_validate_json('{"query": "What is ZX-41?"}')
    assert request.collection == "default"
    assert (request.top_k, request.top_n) == (20, 5)
    assert request.history == []
    assert request.filter is None
    assert request.stream is False
    assert request.request_id is None


def test_chat_request_round_trips() -> None:
    request = ChatRequest(
        query="and the price?",
        collection="products",
        top_k=20,
        top_n=3,
        history=[
            HistoryMessage(role="user", content="hi"),
            HistoryMessage(role="assistant", content="hello"),
        ],
        filter='doc_id == "a"',
        request_id="req-1",
    )
    assert ChatRequest.model_validate_json(request.model_dump_json()) == request


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, ErrorCode.INVALID_REQUEST),
        ({"query": ""}, ErrorCode.INVALID_REQUEST),
        ({"query": "   "}, ErrorCode.INVALID_REQUEST),
        ({"query": 42}, ErrorCode.INVALID_REQUEST),
        ({"query": "x" * (MAX_QUERY_CHARS + 1)}, ErrorCode.TOO_LARGE),
        ({"query": "q", "top_k": 0}, ErrorCode.INVALID_REQUEST),
        ({"query": "q", "top_k": 101}, ErrorCode.INVALID_REQUEST),
        ({"query": "q", "top_k": "ten"}, ErrorCode.INVALID_REQUEST),
        ({"query": "q", "top_k": 3, "top_n": 5}, ErrorCode.INVALID_REQUEST),
        ({"query": "q", "collection": "no spaces"}, ErrorCode.INVALID_REQUEST),
        ({"query": "q", "collection": "1starts_with_digit"}, ErrorCode.INVALID_REQUEST),
        ({"query": "q", "history": [{"role": "robot", "content": "x"}]}, ErrorCode.INVALID_REQUEST),
        (
            {
                "query": "q",
                "history": [{"role": "user", "content": "x"}] * (MAX_HISTORY_MESSAGES + 1),
            },
            ErrorCode.TOO_LARGE,
        ),
        ({"query": "q", "request_id": "has space"}, ErrorCode.INVALID_REQUEST),
        ({"query": "q", "unknown_option": True}, ErrorCode.INVALID_REQUEST),
    ],
)
def test_bad_chat_requests_get_the_right_code(payload: object, code: ErrorCode) -> None:
    assert error_code(ChatRequest, payload) == code


def test_error_message_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        ChatRequest.model_validate({"query": "q", "top_k": 3, "top_n": 5})
    message = error_from_validation(caught.value).message
    assert "top_n (5) must not be above top_k (3)" in message
    assert "Value error" not in message


def test_query_is_trimmed() -> None:
    assert ChatRequest(query="  hello \n").query == "hello"


def test_voice_request_audio_is_base64_in_json_and_bytes_in_python() -> None:
    wav = b"RIFF\x00\x00\x00\x00WAVE"
    payload = {"audio": base64.b64encode(wav).decode()}
    request = VoiceRequest.model_validate_json(json.dumps(payload))
    assert request.audio == wav
    assert request.format == "wav"
    assert json.loads(request.model_dump_json())["audio"] == payload["audio"]
    assert VoiceRequest(audio=wav).audio == wav


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, ErrorCode.INVALID_REQUEST),
        ({"audio": "not base64!"}, ErrorCode.INVALID_REQUEST),
        ({"audio": ""}, ErrorCode.INVALID_REQUEST),
        ({"audio": 12}, ErrorCode.INVALID_REQUEST),
        ({"audio": "AAAA", "format": "mp4"}, ErrorCode.INVALID_REQUEST),
        ({"audio": "AAAA", "format": "pcm_s16le"}, ErrorCode.INVALID_REQUEST),
        ({"audio": "AAAA", "format": "pcm_s16le", "sample_rate": 100}, ErrorCode.INVALID_REQUEST),
        ({"audio": "A" * ((MAX_AUDIO_BYTES // 3 + 2) * 4)}, ErrorCode.TOO_LARGE),
    ],
)
def test_bad_voice_requests_get_the_right_code(payload: object, code: ErrorCode) -> None:
    assert error_code(VoiceRequest, payload) == code


def test_raw_audio_over_the_limit_is_too_large() -> None:
    with pytest.raises(ValidationError) as caught:
        VoiceRequest(audio=b"\x00" * (MAX_AUDIO_BYTES + 1))
    assert error_from_validation(caught.value).code is ErrorCode.TOO_LARGE


def test_pcm_with_its_rate_is_accepted() -> None:
    request = VoiceRequest(audio=b"\x00\x01" * 100, format="pcm_s16le", sample_rate=16000)
    assert request.sample_rate == 16000


def test_responses_round_trip() -> None:
    source = Source(id="c1", text="ZX-41 costs 12 euros.", score=0.82, metadata={"doc_id": "d1"})
    chat = ChatResponse(response="12 euros", sources=[source], request_id="r")
    assert ChatResponse.model_validate_json(chat.model_dump_json()) == chat
    voice = VoiceResponse(
        transcript="what does it cost",
        response="12 euros",
        sources=[source],
        audio=b"RIFF....WAVE",
        sample_rate=22050,
    )
    assert VoiceResponse.model_validate_json(voice.model_dump_json()) == voice
    # The stages of the contract, and the optional parts (null until measured).
    voice_timings = json.loads(voice.model_dump_json())["timings_ms"]
    assert {k for k, v in voice_timings.items() if v is not None} == {
        "stt",
        "rag",
        "generate",
        "tts",
        "total",
    }
    assert set(voice_timings) - {"stt", "rag", "generate", "tts", "total"} == {
        "embed",
        "search",
        "rerank",
        "first_token",
        "first_sentence",
        "first_tts",
        "first_audio",
    }
    # The stages, and (null until measured) the compute each model replica measured.
    chat_timings = json.loads(chat.model_dump_json())["timings_ms"]
    assert {k for k, v in chat_timings.items() if v is not None} == {
        "rewrite",
        "embed",
        "search",
        "rerank",
        "check",
        "generate",
        "total",
    }
    assert set(chat_timings) - {k for k, v in chat_timings.items() if v is not None} == {
        "embed_model",
        "rerank_model",
        "generate_model",
        "rewrite_model",
        "check_model",
    }


def test_pipeline_trigger_and_reply() -> None:
    trigger = PipelineTrigger.model_validate_json(
        '{"pipeline": "document-ingestion", "params": {"paths": ["/docs"]}, "request_id": "t1"}'
    )
    assert trigger.params == {"paths": ["/docs"]}
    assert error_code(PipelineTrigger, {"pipeline": "Not A Name"}) is ErrorCode.INVALID_REQUEST
    big = {"pipeline": "document-ingestion", "params": {"blob": "x" * 70_000}}
    assert error_code(PipelineTrigger, big) is ErrorCode.TOO_LARGE
    accepted = PipelineRunAccepted(run_id="run-1", state=PipelineRunState.SUBMITTED)
    assert json.loads(accepted.model_dump_json()) == {"run_id": "run-1", "state": "submitted"}


def test_pipeline_status_is_a_cloudevent() -> None:
    status = PipelineRunStatus(
        run_id="run-1", pipeline="document-ingestion", state=PipelineRunState.FAILED, error="boom"
    )
    event = PipelineStatusEvent.for_status(status, source="/pipeline-bridge")
    body = json.loads(event.model_dump_json())
    assert body["specversion"] == "1.0"
    assert body["type"] == "ai.pipeline.run.failed"
    assert body["source"] == "/pipeline-bridge"
    assert body["id"]
    assert body["time"].endswith("Z")
    assert body["data"] == {
        "run_id": "run-1",
        "pipeline": "document-ingestion",
        "state": "failed",
        "error": "boom",
    }
    assert PipelineStatusEvent.model_validate_json(event.model_dump_json()) == event
    assert PipelineRunState.FAILED.is_final
    assert not PipelineRunState.RUNNING.is_final


def test_status_event_type_must_match_state() -> None:
    body = json.loads(
        PipelineStatusEvent.for_status(
            PipelineRunStatus(run_id="r", pipeline="p", state=PipelineRunState.RUNNING), "/b"
        ).model_dump_json()
    )
    body["type"] = "ai.pipeline.run.succeeded"
    with pytest.raises(ValidationError, match="does not match"):
        PipelineStatusEvent.model_validate(body)


@given(st.text(min_size=1, max_size=MAX_QUERY_CHARS).filter(lambda s: s.strip()))
def test_any_non_blank_query_within_the_limit_is_accepted(query: str) -> None:
    request = ChatRequest.model_validate_json(json.dumps({"query": query}))
    assert request.query == query.strip()


@given(st.binary(min_size=1, max_size=4096))
def test_any_audio_survives_the_json_round_trip(audio: bytes) -> None:
    request = VoiceRequest(audio=audio)
    assert VoiceRequest.model_validate_json(request.model_dump_json()).audio == audio


@given(st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=5))
def test_arbitrary_json_objects_never_crash_validation(payload: dict[str, object]) -> None:
    try:
        ChatRequest.model_validate_json(json.dumps(payload))
    except ValidationError as exc:
        code: ErrorCode | None = error_from_validation(exc).code
    else:
        code = None
    assert code in {None, ErrorCode.INVALID_REQUEST, ErrorCode.TOO_LARGE}
