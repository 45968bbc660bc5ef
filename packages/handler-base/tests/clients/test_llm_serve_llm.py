"""LLMClient against Ray Serve LLM's application (the gpu profile's ``/llm``), on real Ray.

Ray Serve LLM runs vLLM, which needs a GPU and is not installed here, so the application
under test is a CPU stand-in: a Serve app (:data:`APP`, not ``llm``, which may be the
session's real LLM app) whose deployments carry Ray Serve LLM 2.60's exact names and
handle methods (read from ``ray/llm/_internal/serve/``):

- ``OpenAiIngress`` (``core/ingress/ingress.py``): built with ``llm_deployments`` and
  ``model_cards``; ``chat(body, request)`` answers ``POST /llm/v1/chat/completions``.
- ``LLMServer:<model id>`` (``core/server/builder.py`` names it: ``/`` as ``--``, ``.`` as
  ``_``), built with the real ``LLMConfig`` (``core/server/llm_server.py``): ``async
  chat(request, raw_request_info=None)`` returns an async generator that yields, for a
  streaming request, lists of ``data: {chunk}`` strings ending with ``data: [DONE]``
  (Ray's ``Batcher``), and otherwise one response object; a refusal is an
  ``ErrorResponse`` object; ``llm_config()`` returns the ``LLMConfig``.

What vLLM contributes, its protocol classes, is stood in for by a small module written
for this test (:data:`PROTOCOL_SOURCE`) that only the stand-in's replicas can import, as
vLLM is importable on the GPU workers and not in the handler's process. The stand-in
answers from a fixed implementation (it echoes the question, one word a chunk) and,
stricter than vLLM on purpose, refuses a request whose ``model`` is missing or is not its
model id: so these tests fail if the client does not send the id.
"""

import importlib.util
import json
import pickle
import re
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Annotated, Any, cast

import pytest
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import cloudpickle, serve
from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from handler_base import Settings
from handler_base.clients import LLMClient
from handler_base.clients.base import unreadable_answer
from handler_base.clients.llm import ServerSideModel
from handler_base.errors import InternalError, NotFoundError
from handler_base.inference import ChatCompletionRequest, ChatMessage
from handler_base.testing.ray_fixtures import LocalServe, pickle_by_value

pytestmark = pytest.mark.integration

pickle_by_value(sys.modules[__name__])

APP = "llm-serve-llm"
MODEL_ID = "stand-in/echo-0.1"
SERVER_DEPLOYMENT = "LLMServer:stand-in--echo-0_1"
"""Ray Serve LLM 2.60's name for MODEL_ID's server (``_get_deployment_name``)."""
INGRESS_DEPLOYMENT = "OpenAiIngress"
PROTOCOL_MODULE = "stand_in_vllm_protocol"
REQUEST_TYPE = f"{PROTOCOL_MODULE}:ChatCompletionRequest"
MAX_PROMPT_CHARS = 20_000
"""The stand-in's context: a longer prompt is refused, as vLLM refuses one over its
``max_model_len``."""
CRASH_PROMPT = "crash the engine"
"""A question the stand-in answers by raising its engine's own exception type."""
JsonBody = Annotated[dict[str, Any], Body()]

PROTOCOL_SOURCE = '''
"""Stand-in for vLLM's OpenAI protocol models: importable only by the stand-in's replicas."""

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = True


class ChatCompletionRequest(OpenAIBaseModel):
    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(OpenAIBaseModel):
    error: ErrorInfo


class ChatCompletionResponse(OpenAIBaseModel):
    id: str
    object: str = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any]
    system_fingerprint: str | None = None
    prompt_logprobs: Any = None


class EngineDeadError(Exception):
    pass
'''


# --- the stand-in application ------------------------------------------------------------


def _protocol() -> Any:
    """The stand-in protocol module (in a replica; the test process cannot import it)."""
    import stand_in_vllm_protocol  # type: ignore[import-not-found]  # written at run time

    return stand_in_vllm_protocol


def answer_words(question: str) -> list[str]:
    """The stand-in's fixed answer to ``question``, one piece per generated token."""
    words = f"echo: {question}".split()
    return [words[0], *(f" {w}" for w in words[1:])]


@serve.deployment
class StandInLLMServer:
    """``LLMServer``'s handle methods, answering from :func:`answer_words` (no vLLM)."""

    async def __init__(self, llm_config: LLMConfig) -> None:  # type: ignore[misc]  # Serve awaits it
        self._llm_config = llm_config
        self._received: list[dict[str, Any]] = []

    async def llm_config(self) -> LLMConfig | None:
        return self._llm_config

    async def check_health(self) -> None:
        return None

    async def received(self) -> list[dict[str, Any]]:
        """The requests taken so far (a probe of this test; not a method of LLMServer)."""
        return self._received

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        protocol = _protocol()
        if not isinstance(request, protocol.ChatCompletionRequest):
            # LLMServer hands the request to vLLM, which reads its attributes.
            raise TypeError(
                f"LLMServer.chat takes vLLM's ChatCompletionRequest, not {type(request)}"
            )
        self._received.append(request.model_dump(mode="json"))
        answers = self._engine_chat(request)
        if request.stream:
            return self._batched(answers)
        return answers

    async def _engine_chat(self, request: Any) -> AsyncGenerator[Any, None]:
        """What ``VLLMEngine.chat`` yields: SSE strings, or one response or error object."""
        protocol = _protocol()
        model_id = self._llm_config.model_id
        if request.model != model_id:
            yield protocol.ErrorResponse(
                error=protocol.ErrorInfo(
                    message=f"The model `{request.model}` does not exist.",
                    type="NotFoundError",
                    code=404,
                )
            )
            return
        prompt = "".join(str(m.get("content") or "") for m in request.messages)
        if len(prompt) > MAX_PROMPT_CHARS:
            yield protocol.ErrorResponse(
                error=protocol.ErrorInfo(
                    message=f"This model's maximum context length is {MAX_PROMPT_CHARS}",
                    type="BadRequestError",
                    code=400,
                )
            )
            return
        question = str(request.messages[-1].get("content") or "")
        if question == CRASH_PROMPT:
            raise protocol.EngineDeadError("EngineCore encountered an issue")
        words = answer_words(question)
        limit = request.max_completion_tokens or request.max_tokens
        pieces = words[:limit] if limit else words
        finish = "length" if len(pieces) < len(words) else "stop"
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(pieces),
            "total_tokens": len(prompt.split()) + len(pieces),
            "prompt_tokens_details": None,
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not request.stream:
            yield protocol.ChatCompletionResponse(
                id=completion_id,
                model=model_id,
                choices=[
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(pieces)},
                        "logprobs": None,
                        "finish_reason": finish,
                        "stop_reason": None,
                    }
                ],
                usage=usage,
            )
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_id,
                "choices": [
                    {
                        "index": 0,
                        "delta": {**delta, "reasoning_content": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                        "stop_reason": None,
                    }
                ],
                "usage": None,
            }
            return f"data: {json.dumps(body)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for piece in pieces:
            yield chunk({"content": piece})
        yield chunk({"content": ""}, finish)
        options = request.stream_options
        if options is not None and options.include_usage:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_id,
                "choices": [],
                "usage": usage,
            }
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    @staticmethod
    async def _batched(answers: AsyncGenerator[Any, None]) -> AsyncGenerator[list[Any], None]:
        """Ray's ``Batcher``: lists of what the engine yields (here two at a time)."""
        batch: list[Any] = []
        async for item in answers:
            batch.append(item)
            if len(batch) == 2:
                yield batch
                batch = []
        if batch:
            yield batch


ingress_api = FastAPI()


@serve.deployment(name=INGRESS_DEPLOYMENT)
@serve.ingress(ingress_api)
class StandInOpenAiIngress:
    """``OpenAiIngress``: picks the model's server and relays its answer over HTTP."""

    def __init__(
        self,
        llm_deployments: dict[str, DeploymentHandle[Any]],
        model_cards: dict[str, dict[str, Any]],
        *,
        lora_paths: dict[str, str] | None = None,
    ) -> None:
        self._handles = {m: h.options(stream=True) for m, h in llm_deployments.items()}
        self._model_cards = model_cards

    async def check_health(self) -> None:
        return None

    @staticmethod
    def _error_response(code: int, kind: str, message: str) -> JSONResponse:
        """Ray Serve LLM's error body (``get_response_for_error``)."""
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=code)

    @ingress_api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": list(self._model_cards.values())}

    @ingress_api.post("/v1/chat/completions")
    async def chat(self, body: JsonBody, request: Request) -> Response:
        model = body.get("model")
        if model is None and len(self._handles) == 1:
            model = next(iter(self._handles))
        if model not in self._handles:
            return self._error_response(404, "NotFoundError", f"Could not find model {model!r}")
        protocol = _protocol()
        # stream=True: a generator (the stubs give the union of both answers).
        request = protocol.ChatCompletionRequest.model_validate(body)
        answers = cast(
            DeploymentResponseGenerator[Any], self._handles[model].chat.remote(request, None)
        )
        first = await anext(answers)
        head = first[0] if isinstance(first, list) else first
        if isinstance(head, protocol.ErrorResponse):
            return self._error_response(head.error.code, head.error.type, head.error.message)
        if not isinstance(head, str):
            return JSONResponse(head.model_dump())

        async def events() -> AsyncGenerator[str, None]:
            yield "".join(first)
            async for batch in answers:
                yield "".join(batch)

        return StreamingResponse(events(), media_type="text/event-stream")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def protocol_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vllm-stand-in")
    (folder / f"{PROTOCOL_MODULE}.py").write_text(PROTOCOL_SOURCE)
    return folder


@pytest.fixture(scope="module")
def serve_llm_app(serve_instance: LocalServe, protocol_dir: Path) -> Iterator[str]:
    """The stand-in app at ``/{APP}``; yields its HTTP base URL."""
    actor_options = {
        "num_cpus": 0.05,
        # Only the stand-in's replicas see the protocol module, as only the GPU workers
        # have vLLM.
        "runtime_env": {"env_vars": {"PYTHONPATH": str(protocol_dir)}},
    }
    config = LLMConfig.model_validate({"model_loading_config": {"model_id": MODEL_ID}})
    server = StandInLLMServer.options(  # type: ignore[attr-defined]
        name=SERVER_DEPLOYMENT, ray_actor_options=actor_options
    ).bind(llm_config=config)
    ingress = StandInOpenAiIngress.options(  # type: ignore[attr-defined]
        ray_actor_options=actor_options
    ).bind(
        llm_deployments={MODEL_ID: server},
        model_cards={MODEL_ID: {"id": MODEL_ID, "object": "model", "owned_by": "organization"}},
    )
    serve.run(ingress, name=APP, route_prefix=f"/{APP}")
    yield f"{serve_instance.http_url}/{APP}"
    serve.delete(APP)


def _settings() -> Settings:
    return Settings(http_timeout_s=30, http_retries=1)


def _client(**options: Any) -> LLMClient:
    client = LLMClient(_settings(), app_name=APP, **options)
    client.serve_llm_request_type = REQUEST_TYPE
    return client


async def _received() -> list[dict[str, Any]]:
    handle = serve.get_deployment_handle(SERVER_DEPLOYMENT, app_name=APP)
    received: list[dict[str, Any]] = await handle.received.remote()
    return received


def _question(text: str = "what is the capital of France") -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[ChatMessage(role="user", content=text)])


# --- the request travels without its class -------------------------------------------------


def test_the_request_class_is_imported_only_where_it_is_unpickled() -> None:
    assert importlib.util.find_spec(PROTOCOL_MODULE) is None
    data = {"messages": [{"role": "user", "content": "hi"}], "model": MODEL_ID}
    sent = cloudpickle.dumps(ServerSideModel(REQUEST_TYPE, data))
    assert b"handler_base" not in sent
    with pytest.raises(ModuleNotFoundError, match=PROTOCOL_MODULE):
        pickle.loads(sent)
    built = pickle.loads(
        cloudpickle.dumps(ServerSideModel("handler_base.inference:ChatCompletionRequest", data))
    )
    assert isinstance(built, ChatCompletionRequest)
    assert built.model == MODEL_ID


# --- the handle path ---------------------------------------------------------------------


async def test_the_app_has_ray_serve_llm_deployment_names(serve_llm_app: str) -> None:
    deployments = set(serve.status().applications[APP].deployments)
    assert deployments == {INGRESS_DEPLOYMENT, SERVER_DEPLOYMENT}


async def test_the_client_finds_ray_serve_llm_through_a_handle(serve_llm_app: str) -> None:
    async with _client(mode="auto", base_url="http://127.0.0.1:9") as client:
        assert await client.path() == "handle"
        assert client.serves_through_ray_serve_llm
        assert (await client.models()).data[0].id == MODEL_ID


async def test_a_whole_answer_comes_back_and_the_model_id_was_sent(serve_llm_app: str) -> None:
    before = len(await _received())
    # No model named anywhere: the client sends the app's only model id.
    async with _client(mode="handle") as client:
        answer = await client.chat(_question())
    assert answer.text == "echo: what is the capital of France"
    assert answer.model == MODEL_ID
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 7)
    received = (await _received())[before:]
    assert [r["model"] for r in received] == [MODEL_ID]
    assert received[0]["stream"] is True


async def test_a_streamed_answer_comes_back_piece_by_piece(serve_llm_app: str) -> None:
    before = len(await _received())
    async with _client(mode="handle", model=MODEL_ID) as client:
        pieces = [p async for p in client.stream_text(_question("stream this to me please"))]
        chunks = [c async for c in client.chat_stream(_question("two words"))]
    assert pieces == answer_words("stream this to me please")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == MODEL_ID for c in chunks)
    assert [r["model"] for r in (await _received())[before:]] == [MODEL_ID, MODEL_ID]


async def test_a_token_limit_ends_the_answer_with_length(serve_llm_app: str) -> None:
    async with _client(mode="handle") as client:
        request = ChatCompletionRequest(
            messages=[ChatMessage(role="user", content="one two three four five")], max_tokens=3
        )
        answer = await client.chat(request)
    assert answer.text == "echo: one two"
    assert answer.choices[0].finish_reason == "length"


async def test_a_model_the_app_does_not_serve_is_not_found(serve_llm_app: str) -> None:
    before = len(await _received())
    async with _client(mode="handle", model="someone/else") as client:
        with pytest.raises(NotFoundError, match=MODEL_ID):
            await client.chat(_question())
    assert len(await _received()) == before


async def test_the_stand_in_refuses_a_request_without_the_model_id(serve_llm_app: str) -> None:
    handle = serve.get_deployment_handle(SERVER_DEPLOYMENT, app_name=APP)
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    answers = cast(
        DeploymentResponseGenerator[Any],
        handle.options(stream=True).chat.remote(ServerSideModel(REQUEST_TYPE, body)),
    )
    # Its refusal is an ErrorResponse object, which this process cannot unpickle.
    with pytest.raises(Exception) as caught:  # noqa: PT011 - Ray chooses the wrapper
        await anext(answers)
    assert unreadable_answer(caught.value), repr(caught.value)


async def test_a_refusal_is_internal_and_the_client_keeps_serving(serve_llm_app: str) -> None:
    async with _client(mode="handle") as client:
        with pytest.raises(
            InternalError, match=re.escape(SERVER_DEPLOYMENT) + ".* refused the request"
        ):
            await client.chat(_question("x" * (MAX_PROMPT_CHARS + 1)))
        assert client.serves_through_ray_serve_llm
        assert (await client.chat(_question("still there"))).text == "echo: still there"


async def test_an_engine_failure_is_internal_with_its_message(serve_llm_app: str) -> None:
    async with _client(mode="handle") as client:
        with pytest.raises(
            InternalError, match=re.escape(SERVER_DEPLOYMENT) + ".*EngineDeadError: EngineCore"
        ):
            await client.chat(_question(CRASH_PROMPT))
        assert client.serves_through_ray_serve_llm
        assert (await client.chat(_question("again"))).text == "echo: again"


# --- the HTTP path -------------------------------------------------------------------------


async def test_http_sends_the_model_id_and_reads_vllm_shaped_answers(serve_llm_app: str) -> None:
    before = len(await _received())
    async with LLMClient(_settings(), mode="http", base_url=serve_llm_app, model=MODEL_ID) as http:
        answer = await http.chat(_question("over http"))
        pieces = [p async for p in http.stream_text(_question("streamed over http"))]
    assert answer.text == "echo: over http"
    assert pieces == answer_words("streamed over http")
    assert [r["model"] for r in (await _received())[before:]] == [MODEL_ID, MODEL_ID]


async def test_http_reports_an_unknown_model_as_not_found(serve_llm_app: str) -> None:
    async with LLMClient(_settings(), mode="http", base_url=serve_llm_app, model="nope") as http:
        with pytest.raises(NotFoundError):
            await http.chat(_question())
