"""Property-based tests of every message model, on the decode paths the transports use.

* Valid instances (drawn from strategies built on the fields' documented rules) survive
  the JSON round trip unchanged.
* Arbitrary JSON values, valid messages with one field broken, and arbitrary bytes give
  the model or a PlatformError coded ``invalid_request`` or ``too_large``, never another
  exception, on every path: NATS (:func:`decode_model`), handle callers
  (:func:`validate_as`) and HTTP (a FastAPI route of :func:`platform_app`, which must
  agree with NATS on accept or reject and on the code).
* Fields at each size limit are accepted and one past it gets the right code.
"""

import base64
import inspect
import json
from collections.abc import Callable
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from handler_base import knowledge, messages
from handler_base.errors import (
    HTTP_STATUS,
    ErrorCode,
    ErrorDetail,
    ErrorReply,
    PlatformError,
    validate_as,
)
from handler_base.filters import MAX_FILTER_CHARS
from handler_base.http import platform_app
from handler_base.knowledge import (
    MAX_DOCUMENT_CHARS,
    MAX_DOCUMENT_ID_CHARS,
    MAX_INGEST_DOCUMENTS,
    METADATA_INT_RANGE,
    CollectionsResponse,
    CollectionSummary,
    DeleteRequest,
    DeleteResponse,
    IngestRequest,
    IngestResponse,
    KnowledgeDocument,
    SearchRequest,
    SearchResponse,
    VocabularyRequest,
    VocabularyResponse,
)
from handler_base.messages import (
    MAX_AUDIO_BYTES,
    MAX_HISTORY_CHARS,
    MAX_HISTORY_MESSAGES,
    MAX_PIPELINE_PARAMS_CHARS,
    MAX_QUERY_CHARS,
    MAX_REQUEST_ID_CHARS,
    MAX_TOP_K,
    ChatRequest,
    ChatResponse,
    ChatTimings,
    HistoryMessage,
    PipelineRunAccepted,
    PipelineRunState,
    PipelineRunStatus,
    PipelineStatusEvent,
    PipelineTrigger,
    Source,
    VoiceAudioEvent,
    VoiceDoneEvent,
    VoiceEvent,
    VoiceRequest,
    VoiceResponse,
    VoiceTextEvent,
    VoiceTimings,
    VoiceTranscriptEvent,
)
from handler_base.messaging.codec import decode_model

CLIENT_ERRORS = {ErrorCode.INVALID_REQUEST, ErrorCode.TOO_LARGE}
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies from the fields' rules ------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)


def json_of(integers: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | integers | finite | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    )


json_values = json_of(st.integers(-(2**70), 2**70))
"""Any JSON, integers past 64 bits included."""
metadata = st.dictionaries(
    st.text(max_size=10), json_of(st.integers(*METADATA_INT_RANGE)), max_size=3
)
"""JSON metadata the knowledge store can keep."""
collections = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,40}", fullmatch=True)
request_ids = st.none() | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_REQUEST_ID_CHARS
)
queries = st.text(min_size=1, max_size=200).map(str.strip).filter(bool)
filters = st.none() | st.text(max_size=200)
optional_text = st.none() | st.text(max_size=20)
audio = st.binary(min_size=1, max_size=256)
states = st.sampled_from(PipelineRunState)


@st.composite
def top_k_and_n(draw: st.DrawFn) -> dict[str, int]:
    top_k = draw(st.integers(1, MAX_TOP_K))
    return {"top_k": top_k, "top_n": draw(st.integers(1, top_k))}


history_messages = st.builds(
    HistoryMessage,
    role=st.sampled_from(["system", "user", "assistant"]),
    content=st.text(max_size=100),
)
sources = st.builds(
    Source, id=st.text(max_size=20), text=st.text(max_size=80), score=finite, metadata=metadata
)
chat_timings = st.builds(
    ChatTimings, embed=finite, search=finite, rerank=finite, generate=finite, total=finite
)
voice_timings = st.builds(
    VoiceTimings, stt=finite, rag=finite, generate=finite, tts=finite, total=finite
)
sample_rates = st.integers(8000, 192_000)
audio_formats = st.sampled_from(["wav", "pcm"])


@st.composite
def chat_requests(draw: st.DrawFn) -> ChatRequest:
    return ChatRequest(
        query=draw(queries),
        collection=draw(collections),
        **draw(top_k_and_n()),
        history=draw(st.lists(history_messages, max_size=4)),
        filter=draw(filters),
        stream=draw(st.booleans()),
        request_id=draw(request_ids),
    )


@st.composite
def voice_requests(draw: st.DrawFn) -> VoiceRequest:
    audio_format = draw(st.sampled_from(["wav", "pcm_s16le"]))
    rate = draw(sample_rates if audio_format == "pcm_s16le" else st.none() | sample_rates)
    return VoiceRequest(
        audio=draw(audio),
        format=audio_format,
        sample_rate=rate,
        collection=draw(collections),
        **draw(top_k_and_n()),
        voice=draw(st.none() | st.text(min_size=1, max_size=128)),
        response_format=draw(audio_formats),
        request_id=draw(request_ids),
    )


pipeline_statuses = st.builds(
    PipelineRunStatus,
    run_id=st.text(max_size=20),
    pipeline=st.text(max_size=20),
    state=states,
    error=optional_text,
)
documents = st.builds(
    KnowledgeDocument,
    id=st.none() | st.text(min_size=1, max_size=40),
    text=st.text(min_size=1, max_size=200),
    metadata=metadata,
)

VALID: dict[type[BaseModel], st.SearchStrategy[BaseModel]] = {
    HistoryMessage: history_messages,
    Source: sources,
    ChatRequest: chat_requests(),
    ChatTimings: chat_timings,
    ChatResponse: st.builds(
        ChatResponse,
        response=st.text(max_size=100),
        sources=st.lists(sources, max_size=3),
        request_id=optional_text,
        timings_ms=chat_timings,
    ),
    VoiceRequest: voice_requests(),
    VoiceTimings: voice_timings,
    VoiceResponse: st.builds(
        VoiceResponse,
        transcript=st.text(max_size=50),
        response=st.text(max_size=50),
        sources=st.lists(sources, max_size=2),
        audio=audio,
        sample_rate=sample_rates,
        audio_format=audio_formats,
        request_id=optional_text,
        timings_ms=voice_timings,
    ),
    VoiceTranscriptEvent: st.builds(
        VoiceTranscriptEvent, text=st.text(max_size=50), language=optional_text
    ),
    VoiceTextEvent: st.builds(VoiceTextEvent, text=st.text(max_size=50)),
    VoiceAudioEvent: st.builds(
        VoiceAudioEvent,
        index=st.integers(0, 10_000),
        text=st.text(max_size=50),
        audio=audio,
        sample_rate=sample_rates,
        audio_format=audio_formats,
    ),
    VoiceDoneEvent: st.builds(
        VoiceDoneEvent,
        transcript=st.text(max_size=50),
        response=st.text(max_size=50),
        sources=st.lists(sources, max_size=2),
        sentences=st.integers(0, 100),
        first_audio_ms=st.none() | finite,
        request_id=optional_text,
        timings_ms=voice_timings,
    ),
    PipelineTrigger: st.builds(
        PipelineTrigger,
        pipeline=st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True),
        params=metadata,
        request_id=request_ids,
    ),
    PipelineRunAccepted: st.builds(PipelineRunAccepted, run_id=st.text(max_size=20), state=states),
    PipelineRunStatus: pipeline_statuses,
    PipelineStatusEvent: st.builds(
        PipelineStatusEvent.for_status, pipeline_statuses, source=st.text(max_size=30)
    ),
    KnowledgeDocument: documents,
    IngestRequest: st.builds(
        IngestRequest, collection=collections, documents=st.lists(documents, min_size=1, max_size=3)
    ),
    IngestResponse: st.builds(
        IngestResponse,
        collection=collections,
        ids=st.lists(st.text(max_size=20), max_size=3),
        chunks=st.integers(0, 10_000),
    ),
    SearchRequest: st.builds(
        SearchRequest,
        query=queries,
        collection=collections,
        top_k=st.integers(1, MAX_TOP_K),
        filter=filters,
    ),
    SearchResponse: st.builds(SearchResponse, results=st.lists(sources, max_size=3)),
    DeleteRequest: st.builds(
        DeleteRequest,
        id=st.text(min_size=1, max_size=MAX_DOCUMENT_ID_CHARS),
        collection=collections,
    ),
    DeleteResponse: st.builds(DeleteResponse, deleted=st.integers(0, 10_000)),
    VocabularyRequest: st.builds(VocabularyRequest, collection=collections),
    VocabularyResponse: st.builds(
        VocabularyResponse, collection=collections, terms=st.lists(st.text(max_size=40), max_size=5)
    ),
    CollectionSummary: st.builds(CollectionSummary, name=collections, count=st.integers(0, 10_000)),
    CollectionsResponse: st.builds(
        CollectionsResponse,
        collections=st.lists(
            st.builds(CollectionSummary, name=collections, count=st.integers(0, 10_000)),
            max_size=3,
        ),
    ),
    ErrorDetail: st.builds(ErrorDetail, code=st.sampled_from(ErrorCode), message=st.text()),
    ErrorReply: st.builds(
        ErrorReply.of, code=st.sampled_from(ErrorCode), message=st.text(max_size=50)
    ),
}
MODELS = sorted(VALID, key=lambda m: m.__name__)
REQUEST_MODELS = [ChatRequest, VoiceRequest, PipelineTrigger, IngestRequest, SearchRequest]
"""The bodies callers send (HTTP routes, NATS subjects, handle methods)."""


def public_models() -> set[type[BaseModel]]:
    """Every public pydantic model that the message modules define."""
    found: set[type[BaseModel]] = {ErrorReply, ErrorDetail}
    for module in (messages, knowledge):
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.add(value)
    return found


def test_every_public_model_has_a_strategy() -> None:
    missing = {m.__name__ for m in public_models()} - {m.__name__ for m in VALID}
    assert not missing, f"add strategies for {sorted(missing)}"


# --- the decode paths -----------------------------------------------------------------------


def decoded(model: type[BaseModel], data: bytes) -> BaseModel | ErrorCode:
    """The NATS decode path: the model, or the code of the PlatformError it raised."""
    try:
        return decode_model(data, model)
    except PlatformError as error:
        failure = error
    assert failure.message, "an error must say what is wrong"
    return failure.code


def validated(model: type[BaseModel], value: object) -> BaseModel | ErrorCode:
    """The handle path (a mapping from Python callers)."""
    try:
        return validate_as(model, value)
    except PlatformError as error:
        return error.code


def echo_app() -> TestClient:
    """A platform app with one route per request model, parsed by FastAPI as the apps do."""
    app: FastAPI = platform_app("fuzz", distribution="handler-base")

    def add_route(model: type[BaseModel]) -> None:
        async def echo(body: Any) -> dict[str, bool]:
            return {"ok": True}

        echo.__annotations__["body"] = model  # FastAPI reads the body model from here
        app.post(f"/{model.__name__}")(echo)

    for model in REQUEST_MODELS:
        add_route(cast(type[BaseModel], model))
    return TestClient(app, raise_server_exceptions=False)


HTTP = echo_app()


def posted(model: type[BaseModel], data: bytes) -> ErrorCode | None:
    """The HTTP path: None when accepted, else the error's code (after checking its shape)."""
    response = HTTP.post(
        f"/{model.__name__}", content=data, headers={"content-type": "application/json"}
    )
    if response.status_code == 200:
        return None
    error = ErrorReply.model_validate(response.json()).error
    assert error.code in CLIENT_ERRORS, response.text
    assert response.status_code == HTTP_STATUS[error.code], response.text
    return error.code


def assert_model_or_client_error(result: BaseModel | ErrorCode, model: type[BaseModel]) -> None:
    if isinstance(result, ErrorCode):
        assert result in CLIENT_ERRORS, result
    else:
        assert isinstance(result, model), result


NO_VALUE = object()


def check_every_path(model: type[BaseModel], data: bytes, value: object = NO_VALUE) -> None:
    """Each path gives the model or a client error; HTTP and NATS agree."""
    over_nats = decoded(model, data)
    assert_model_or_client_error(over_nats, model)
    if value is not NO_VALUE:
        assert_model_or_client_error(validated(model, value), model)
    if model in REQUEST_MODELS:
        over_http = posted(model, data)
        expected = over_nats if isinstance(over_nats, ErrorCode) else None
        assert over_http == expected, f"HTTP said {over_http}, NATS said {expected}"


# --- properties -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(data=st.data())
def test_valid_messages_round_trip_through_json(
    model: type[BaseModel], data: st.DataObject
) -> None:
    message = data.draw(VALID[model])
    wire = message.model_dump_json().encode()
    assert decode_model(wire, model) == message
    assert validate_as(model, message.model_dump()) == message
    assert validate_as(model, json.loads(wire)) == message


@FUZZ
@given(data=st.data())
def test_voice_events_round_trip_as_the_union(data: st.DataObject) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(VoiceEvent)
    event = data.draw(
        st.one_of(
            VALID[VoiceTranscriptEvent],
            VALID[VoiceTextEvent],
            VALID[VoiceAudioEvent],
            VALID[VoiceDoneEvent],
        )
    )
    assert adapter.validate_json(adapter.dump_json(event)) == event


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(value=json_values)
@example(value=None)
@example(value=[])
@example(value={"query": "x" * (MAX_QUERY_CHARS + 1)})
def test_any_json_value_gives_the_model_or_a_client_error(
    model: type[BaseModel], value: object
) -> None:
    check_every_path(model, json.dumps(value).encode(), value)


@st.composite
def broken_messages(draw: st.DrawFn, model: type[BaseModel]) -> dict[str, Any]:
    """A valid message as JSON with one field removed, replaced by junk, or added."""
    body: dict[str, Any] = draw(VALID[model]).model_dump(mode="json")
    field = draw(st.sampled_from([*model.model_fields, "unexpected"]))
    if field in body and draw(st.booleans()):
        del body[field]
    else:
        body[field] = draw(json_values)
    return body


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(data=st.data())
def test_a_message_with_one_broken_field_gives_the_model_or_a_client_error(
    model: type[BaseModel], data: st.DataObject
) -> None:
    body = data.draw(broken_messages(model))
    check_every_path(model, json.dumps(body).encode(), body)


@pytest.mark.parametrize("model", REQUEST_MODELS, ids=lambda m: m.__name__)
@FUZZ
@given(data=st.binary(max_size=200))
@example(data=b"[" * 100_000)
@example(data=b'{"query": ' * 10_000)
@example(data=b"\xff\xfe{}")
@example(data=b'{"query": "\\ud800"}')
@example(data=b'{"query": "x", "top_k": 1e999}')
@example(data=b'{"query": "x", "top_k": NaN}')
@example(data=b'{"query": "x", "top_k": ' + b"9" * 5000 + b"}")
def test_any_bytes_give_the_model_or_a_client_error(model: type[BaseModel], data: bytes) -> None:
    check_every_path(model, data)


# --- limits ---------------------------------------------------------------------------------


def body_of(**fields: object) -> bytes:
    return json.dumps(fields).encode()


LIMITS: list[tuple[str, type[BaseModel], Callable[[], bytes], ErrorCode | None]] = [
    ("query-at-limit", ChatRequest, lambda: body_of(query="q" * MAX_QUERY_CHARS), None),
    (
        "query-over",
        ChatRequest,
        lambda: body_of(query="q" * (MAX_QUERY_CHARS + 1)),
        ErrorCode.TOO_LARGE,
    ),
    (
        "history-at-limit",
        ChatRequest,
        lambda: body_of(
            query="q", history=[{"role": "user", "content": "h"}] * MAX_HISTORY_MESSAGES
        ),
        None,
    ),
    (
        "history-over",
        ChatRequest,
        lambda: body_of(
            query="q", history=[{"role": "user", "content": "h"}] * (MAX_HISTORY_MESSAGES + 1)
        ),
        ErrorCode.TOO_LARGE,
    ),
    (
        "history-message-over",
        ChatRequest,
        lambda: body_of(
            query="q", history=[{"role": "user", "content": "h" * (MAX_HISTORY_CHARS + 1)}]
        ),
        ErrorCode.TOO_LARGE,
    ),
    (
        "filter-at-limit",
        ChatRequest,
        lambda: body_of(query="q", filter="f" * MAX_FILTER_CHARS),
        None,
    ),
    (
        "filter-over",
        ChatRequest,
        lambda: body_of(query="q", filter="f" * (MAX_FILTER_CHARS + 1)),
        ErrorCode.TOO_LARGE,
    ),
    (
        "top-k-over",
        ChatRequest,
        lambda: body_of(query="q", top_k=MAX_TOP_K + 1),
        ErrorCode.INVALID_REQUEST,
    ),
    (
        "request-id-over",
        ChatRequest,
        lambda: body_of(query="q", request_id="r" * (MAX_REQUEST_ID_CHARS + 1)),
        ErrorCode.TOO_LARGE,
    ),
    (
        "audio-at-limit",
        VoiceRequest,
        lambda: body_of(audio=base64.b64encode(b"\x01" * MAX_AUDIO_BYTES).decode()),
        None,
    ),
    (
        "audio-just-over",
        VoiceRequest,
        lambda: body_of(audio=base64.b64encode(b"\x01" * (MAX_AUDIO_BYTES + 1)).decode()),
        ErrorCode.TOO_LARGE,
    ),
    (
        "documents-at-limit",
        IngestRequest,
        lambda: body_of(documents=[{"text": "t"}] * MAX_INGEST_DOCUMENTS),
        None,
    ),
    (
        "documents-over",
        IngestRequest,
        lambda: body_of(documents=[{"text": "t"}] * (MAX_INGEST_DOCUMENTS + 1)),
        ErrorCode.TOO_LARGE,
    ),
    (
        "document-text-over",
        IngestRequest,
        lambda: body_of(documents=[{"text": "t" * (MAX_DOCUMENT_CHARS + 1)}]),
        ErrorCode.TOO_LARGE,
    ),
    (
        "metadata-int-at-limit",
        IngestRequest,
        lambda: body_of(documents=[{"text": "t", "metadata": {"n": [METADATA_INT_RANGE[1]]}}]),
        None,
    ),
    (
        "metadata-int-over",
        IngestRequest,
        lambda: body_of(documents=[{"text": "t", "metadata": {"n": {"m": 2**63}}}]),
        ErrorCode.INVALID_REQUEST,
    ),
    (
        "search-query-over",
        SearchRequest,
        lambda: body_of(query="q" * (MAX_QUERY_CHARS + 1)),
        ErrorCode.TOO_LARGE,
    ),
    (
        "pipeline-params-over",
        PipelineTrigger,
        lambda: body_of(pipeline="p", params={"x": "y" * MAX_PIPELINE_PARAMS_CHARS}),
        ErrorCode.TOO_LARGE,
    ),
]


@pytest.mark.parametrize(
    ("model", "make_body", "code"),
    [pytest.param(model, make, code, id=name) for name, model, make, code in LIMITS],
)
def test_fields_at_and_past_their_limit(
    model: type[BaseModel], make_body: Callable[[], bytes], code: ErrorCode | None
) -> None:
    data = make_body()
    result = decoded(model, data)
    if code is None:
        assert isinstance(result, model), result
    else:
        assert result == code
    assert posted(model, data) == code


def test_raw_audio_just_over_the_limit_is_too_large_by_handle() -> None:
    assert validated(VoiceRequest, {"audio": b"\x01" * MAX_AUDIO_BYTES}) is not ErrorCode.TOO_LARGE
    assert (
        validated(VoiceRequest, {"audio": b"\x01" * (MAX_AUDIO_BYTES + 1)}) == ErrorCode.TOO_LARGE
    )


@pytest.mark.parametrize(
    "metadata",
    [{"n": 2**64}, {"n": -(2**63) - 1}, {"a": {1: "x"}}, {"f": float("nan")}, {"o": object()}],
    ids=["int-over", "int-under", "nested-int-key", "nan", "not-json"],
)
def test_metadata_the_store_cannot_keep_is_invalid_by_handle(metadata: dict[str, Any]) -> None:
    body = {"documents": [{"text": "t", "metadata": metadata}]}
    assert validated(IngestRequest, body) == ErrorCode.INVALID_REQUEST
