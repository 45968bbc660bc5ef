"""Schemathesis over the OpenAPI documents of the platform's HTTP apps, on the real stack.

Every app runs on the session's Serve: the model apps with the real packaged models
(``model_apps``: embeddings, reranker, LLM in its cpu profile, Whisper, TTS), the chat
app with a Milvus Lite knowledge base in a temporary folder, and the voice app. Each
app's document is read from its live URL (``/{prefix}/openapi.json``); every operation
in it is called with invalid data (negative) and with valid data (positive). Checks: no
5xx (``not_a_server_error``) and, where the document declares the response's status, a
body that conforms to its schema (``response_schema_conformance``). Schemathesis's
``negative_data_rejection`` is left out: pydantic's lax mode takes ``true`` for an
integer field (``top_n: true`` is 1), which that check reports.

The web page app (route ``/``) is left out: its document has only the page and its
static files, no API.

Examples per operation are bounded so the module runs in a few minutes on two cores.
Operations that run a model on what they are given keep few positive examples, and
every request is made cheap before it goes (see :func:`bounded`): at most a few answer
tokens, short speech, and chat questions asked of a small collection ingested here.
"""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from chat_handler import deployment as chat
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe
from ray_inference import embeddings, llm, reranker, tts, whisper
from voice_assistant import deployment as voice

pytestmark = pytest.mark.integration

APPS: dict[str, FastAPI] = {
    "embeddings": embeddings.api,
    "reranker": reranker.api,
    "llm": llm.api,
    "whisper": whisper.api,
    "tts": tts.api,
    "chat": chat.api,
    "voice": voice.api,
}
"""Route prefix -> the app's FastAPI object (whose document names the operations)."""

FUZZ_COLLECTION = "fuzz_facts"
"""A small collection, so that positive chat questions run the whole RAG path."""
EMPTY_COLLECTION = "fuzz_nothing_here"
"""Where other chat questions go: no sources, so no LLM call."""
MAX_ANSWER_TOKENS = 8
MAX_SPEECH_CHARS = 200


@dataclass(frozen=True)
class Budget:
    """Examples of one operation, per generation mode."""

    negative: int = 40
    positive: int = 15


RUNS_A_MODEL = Budget(negative=20, positive=3)
BUDGETS: dict[tuple[str, str, str], Budget] = {
    ("llm", "POST", "/v1/chat/completions"): RUNS_A_MODEL,
    ("whisper", "POST", "/v1/audio/transcriptions"): RUNS_A_MODEL,
    ("tts", "POST", "/v1/audio/speech"): RUNS_A_MODEL,
    ("chat", "POST", "/"): RUNS_A_MODEL,
    ("chat", "POST", "/v1/chat/completions"): RUNS_A_MODEL,
    ("chat", "POST", "/knowledge/documents"): Budget(negative=40, positive=5),
    ("voice", "POST", "/"): RUNS_A_MODEL,
    ("voice", "POST", "/stream"): RUNS_A_MODEL,
}
CHECKS = [not_a_server_error, response_schema_conformance]
REQUEST_TIMEOUT_S = 120


SCALE = float(os.environ.get("OPENAPI_FUZZ_SCALE", "1"))
"""Multiplies every budget: ``OPENAPI_FUZZ_SCALE=10`` for a longer hunt by hand."""


def operations() -> Iterator[tuple[str, str, str, GenerationMode]]:
    """(prefix, METHOD, path, mode) of every operation the apps document.

    Negative data only where the operation takes something that can be invalid.
    """
    for prefix, app in APPS.items():
        for path, methods in app.openapi()["paths"].items():
            for method, spec in methods.items():
                yield prefix, method.upper(), path, GenerationMode.POSITIVE
                if spec.get("parameters") or spec.get("requestBody"):
                    yield prefix, method.upper(), path, GenerationMode.NEGATIVE


OPERATIONS = sorted(operations(), key=lambda op: (*op[:3], op[3].value))


def bounded(prefix: str, mode: GenerationMode, body: Any) -> Any:
    """The request body, changed only where it would make a model work long.

    A field is capped only when it holds a valid value over the cap (or is absent), so
    that invalid data stays invalid.
    """
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if prefix in ("llm", "chat"):
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_ANSWER_TOKENS:
                body[name] = MAX_ANSWER_TOKENS
        if prefix == "llm" and "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = MAX_ANSWER_TOKENS
    if prefix == "chat" and ("query" in body or "messages" in body):
        if mode is GenerationMode.POSITIVE:
            body["collection"] = FUZZ_COLLECTION
        else:
            body.setdefault("collection", EMPTY_COLLECTION)
    if prefix == "tts" and isinstance(body.get("input"), str):
        body["input"] = body["input"][:MAX_SPEECH_CHARS]
    return body


@pytest.fixture(scope="module")
def stack(
    serve_instance: LocalServe, model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Deploy the chat and voice apps beside the models, ingest the small collection, yield
    the Serve proxy's URL."""
    from ray import serve

    data_dir = tmp_path_factory.mktemp("openapi-fuzz")
    serve.run(
        chat.build_app({"milvus_uri": str(data_dir / "milvus.db")}),
        name="chat",
        route_prefix="/chat",
    )
    serve.run(voice.build_app(), name="voice", route_prefix="/voice")
    try:
        response = requests.post(
            f"{serve_instance.http_url}/chat/knowledge/documents",
            json={
                "collection": FUZZ_COLLECTION,
                "documents": [{"id": "zx41", "text": "The ZX-41 costs 417 euros."}],
            },
            timeout=REQUEST_TIMEOUT_S,
        )
        assert response.status_code == 200, response.text
        yield serve_instance.http_url
    finally:
        for name in ("voice", "chat"):
            serve.delete(name)


@pytest.fixture(scope="module")
def live_schemas(stack: str) -> Callable[[str], Any]:
    """The app's OpenAPI document as its live URL serves it, loaded once per app."""
    loaded: dict[str, Any] = {}

    def schema_of(prefix: str) -> Any:
        if prefix not in loaded:
            loaded[prefix] = schemathesis.openapi.from_url(f"{stack}/{prefix}/openapi.json")
        return loaded[prefix]

    return schema_of


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.mark.parametrize(
    ("prefix", "method", "path", "mode"),
    [pytest.param(*op, id=f"{op[0]}-{op[1]}-{op[2]}-{op[3].value}") for op in OPERATIONS],
)
def test_no_server_error_and_documented_responses(
    stack: str,
    live_schemas: Callable[[str], Any],
    session: requests.Session,
    prefix: str,
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    operation = live_schemas(prefix)[path][method]
    budget = BUDGETS.get((prefix, method, path), Budget())
    examples = budget.negative if mode is GenerationMode.NEGATIVE else budget.positive
    examples = max(1, round(examples * SCALE))

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Case[Any]) -> None:
        if isinstance(case.body, dict):
            case.body = bounded(prefix, mode, case.body)
        case.call_and_validate(
            base_url=f"{stack}/{prefix}",
            session=session,
            checks=CHECKS,
            timeout=REQUEST_TIMEOUT_S,
        )

    call()
