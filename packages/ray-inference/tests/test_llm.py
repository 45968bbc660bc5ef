"""LLM: the llama.cpp runner, the Serve deployment, its client and the official OpenAI client.

The model runner is tested directly (no cluster) on SmolLM2-135M, the smallest model of
the catalog, on purpose: these tests check mechanics (template, stops, seeds, the prompt
cache, limits, cancelling), not answer quality, and SmolLM2 runs them three times faster.
The default model (Qwen2.5-Coder-0.5B) is joined and asked in test_llm_models.py. The
deployment is the session's shared one on its real local Ray cluster (the model the root
conftest gives it; its served name is read from its args), over handles and HTTP. The gpu
profile (vLLM through Ray Serve LLM) cannot run here: it is rendered and validated with
Ray's own schemas.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from importlib.util import find_spec
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from handler_base.clients.llm import LLMClient
from handler_base.errors import InvalidRequestError, TooLargeError, UnavailableError
from handler_base.inference import (
    MAX_COMPLETION_TOKENS,
    MODEL_TIME_HEADER,
    ChatCompletionRequest,
    ChatMessage,
)
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe
from ray_inference.llm import (
    DEFAULT_SYSTEM_PROMPT,
    PROMPT_BLOCK_TOKENS,
    Finished,
    LlamaChatModel,
    LLMArgs,
    StopScanner,
    TextPiece,
    build_app,
)
from ray_inference.llm_gpu import GPU_BUILDER_IMPORT_PATH, gpu_application_config
from ray_inference.llm_models import SMOLLM2_135M

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
TOO_LONG = "word " * 6_000
"""About 6,000 tokens: within the message limit (32,000 chars), over the 2,048 context."""


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": FRANCE, **fields})


def answer_of(events: list[TextPiece | Finished]) -> tuple[str, Finished]:
    *pieces, last = events
    assert isinstance(last, Finished)
    return "".join(p.text for p in pieces if isinstance(p, TextPiece)), last


# --- stop sequences -----------------------------------------------------------------


def test_stop_scanner_holds_back_a_possible_stop() -> None:
    scanner = StopScanner(["STOP"])
    assert scanner.feed("Hello ST") == ("Hello ", False)
    assert scanner.feed("ARS") == ("STAR", False)  # "S" may start "STOP"
    assert scanner.feed(" and ST") == ("S and ", False)
    assert scanner.feed("OP here") == ("", True)


def test_stop_scanner_finds_the_earliest_of_several() -> None:
    scanner = StopScanner(["world", "lo", ""])
    assert scanner.feed("Hello world") == ("Hel", True)


def test_stop_scanner_releases_held_text_at_the_end() -> None:
    scanner = StopScanner(["\n\n"])
    assert scanner.feed("one\n") == ("one", False)
    assert scanner.flush() == "\n"


# --- the model runner, without Ray -----------------------------------------------------


@pytest.fixture(scope="module")
def model() -> LlamaChatModel:
    """SmolLM2-135M, explicitly: the runner's mechanics, on the fastest model."""
    return LlamaChatModel(SMOLLM2_135M.gguf_path(), threads=2)


def test_prompt_is_the_gguf_chatml_template(model: LlamaChatModel) -> None:
    prompt = model.prompt_text(request())
    assert prompt == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    own = ChatCompletionRequest(
        messages=[ChatMessage(role="system", content="Be brief."), *request().messages]
    )
    assert model.prompt_text(own).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert model.trained_context_tokens == 8192
    assert model.context_tokens == 2048


def test_answers_the_capital_of_france(model: LlamaChatModel) -> None:
    req = request(temperature=0)
    text, end = answer_of(list(model.generate(model.prepare(req), req)))
    assert "Paris" in text
    assert end.finish_reason == "stop"
    assert end.prompt_tokens == len(model.prepare(req).prompt_tokens)
    assert 0 < end.completion_tokens < 40


def test_max_tokens_ends_with_length(model: LlamaChatModel) -> None:
    req = ChatCompletionRequest.model_validate({"messages": STORY, "max_tokens": 5})
    text, end = answer_of(list(model.generate(model.prepare(req), req)))
    assert (end.finish_reason, end.completion_tokens) == ("length", 5)
    assert text


def test_stop_sequence_cuts_the_answer(model: LlamaChatModel) -> None:
    req = request(temperature=0, stop=["Paris"])
    text, end = answer_of(list(model.generate(model.prepare(req), req)))
    assert "Paris" not in text
    assert text.startswith("The capital of France")
    assert end.finish_reason == "stop"


def test_same_seed_same_answer_and_the_seed_is_used(model: LlamaChatModel) -> None:
    def story(seed: int) -> str:
        req = ChatCompletionRequest.model_validate(
            {"messages": STORY, "temperature": 1.0, "seed": seed, "max_tokens": 24}
        )
        return answer_of(list(model.generate(model.prepare(req), req)))[0]

    first = story(11)
    assert story(11) == first
    # Sampled at temperature 1, other seeds tell other stories: were the seed ignored
    # (a fixed one used instead), every seed would give the same text.
    assert {story(seed) for seed in (12, 13, 14)} != {first}


def test_the_prompt_cache_reuses_the_shared_system_prompt_and_keeps_the_answer(
    model: LlamaChatModel,
) -> None:
    """A prompt sharing the previous one's system message is evaluated from its blocks on,
    and answers exactly as a whole evaluation (the same model with the cache off) does."""
    system = {"role": "system", "content": "Answer in one short sentence. " * 6}
    first, second = (
        ChatCompletionRequest.model_validate(
            {"messages": [system, {"role": "user", "content": q}], "temperature": 0}
        )
        for q in ("What is the capital of France?", "What is the capital of Italy?")
    )
    assert model.prompt_cache
    answer_of(list(model.generate(model.prepare(first), first)))
    reused, evaluated = model.prompt_tokens_reused, model.prompt_tokens_evaluated
    cached = answer_of(list(model.generate(model.prepare(second), second)))
    prompt = len(model.prepare(second).prompt_tokens)
    assert model.prompt_tokens_reused - reused >= PROMPT_BLOCK_TOKENS * 2
    assert model.prompt_tokens_evaluated - evaluated < prompt
    uncached = LlamaChatModel(SMOLLM2_135M.gguf_path(), threads=2, prompt_cache=False)
    assert answer_of(list(uncached.generate(uncached.prepare(second), second))) == cached
    assert uncached.prompt_tokens_reused == 0


def test_prompt_over_the_context_is_too_large(model: LlamaChatModel) -> None:
    with pytest.raises(TooLargeError, match="context holds 2048"):
        model.prepare(ChatCompletionRequest(messages=[ChatMessage(role="user", content=TOO_LONG)]))


def test_max_tokens_is_cut_to_the_room_left(model: LlamaChatModel) -> None:
    long_prompt = "word " * 1_900
    req = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": long_prompt}], "max_tokens": 1_000}
    )
    prepared = model.prepare(req)
    assert prepared.max_tokens == 2048 - len(prepared.prompt_tokens) < 1_000


def test_cancelled_generation_stops(model: LlamaChatModel) -> None:
    req = ChatCompletionRequest.model_validate({"messages": STORY, "max_tokens": 500})
    cancelled = threading.Event()
    events = []
    for event in model.generate(model.prepare(req), req, cancelled):
        events.append(event)
        if len(events) == 3:
            cancelled.set()
    assert len(events) == 3  # nothing after the cancel, not even Finished


# --- builder and gpu profile ----------------------------------------------------------


def test_cpu_options_set_limits_and_retry_after() -> None:
    options = LLMArgs(
        profile="cpu", max_ongoing_requests=1, max_queued_requests=2, retry_after_s=3
    ).deployment_options()
    assert options["max_ongoing_requests"] == 1
    assert options["max_queued_requests"] == 2
    assert options["backpressure_config"] == {"retry_after_s": 3}
    assert options["ray_actor_options"]["num_gpus"] == 0


def test_gpu_config_validates_with_ray_schemas() -> None:
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    engine = LLMArgs(profile="gpu", model_id="smollm2", model_source="/m/smol").gpu_engine_args()
    entry = gpu_application_config(engine)
    app = ServeApplicationSchema.model_validate(entry)
    assert app.import_path == GPU_BUILDER_IMPORT_PATH == "ray.serve.llm:build_openai_app"
    assert app.route_prefix == "/llm"
    ServeDeploySchema.model_validate({"applications": [entry]})
    (config,) = entry["args"]["llm_configs"]
    assert config["model_loading_config"] == {"model_id": "smollm2", "model_source": "/m/smol"}
    assert config["placement_group_config"]["bundles"][0]["GPU"] == 0.95
    assert config["deployment_config"]["max_queued_requests"] >= 1
    assert "retry_after_s" in config["deployment_config"]["backpressure_config"]


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vLLM is installed here")
def test_gpu_app_without_vllm_says_what_to_do() -> None:
    with pytest.raises(ImportError, match="gpu_application_config"):
        build_app({"profile": "gpu"})


def test_module_imports_without_gpu_libraries_or_loading() -> None:
    code = (
        "import sys, ray_inference.llm as m; "
        "assert 'llama_cpp' not in sys.modules and 'vllm' not in sys.modules; "
        "assert 'app' not in vars(m)"
    )
    env = {**os.environ, "RAY_AI_PROFILE": "gpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# --- the deployment on Ray Serve --------------------------------------------------------


def wait_healthy(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/-/healthz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not become healthy")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def llm_url(model_apps: SharedApps) -> str:
    return model_apps.url("llm")


@pytest.fixture(scope="module")
def served_id(model_apps: SharedApps) -> str:
    """The name the shared deployment serves its model as (the model's own by default)."""
    return LLMArgs.model_validate(model_apps.args("llm")).served_model_id


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=120) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def clients(llm_url: str) -> AsyncIterator[tuple[LLMClient, LLMClient]]:
    async with (
        LLMClient(mode="handle") as by_handle,
        LLMClient(mode="http", base_url=llm_url) as by_http,
    ):
        yield by_handle, by_http


async def test_handle_answers_the_capital_of_france(
    clients: tuple[LLMClient, LLMClient], served_id: str
) -> None:
    by_handle, _ = clients
    response = await by_handle.chat(request(temperature=0))
    assert "Paris" in response.text
    assert response.model == served_id
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage.prompt_tokens > 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_handle_and_http_agree(clients: tuple[LLMClient, LLMClient], served_id: str) -> None:
    by_handle, by_http = clients
    req = ChatCompletionRequest.model_validate(
        {"messages": STORY, "temperature": 0, "max_tokens": 16}
    )
    a, b = await by_handle.chat(req), await by_http.chat(req)
    assert a.text == b.text
    assert a.usage == b.usage
    assert a.choices[0].finish_reason == b.choices[0].finish_reason == "length"
    assert [m.id for m in (await by_handle.models()).data] == [served_id]
    assert await by_handle.models() == await by_http.models()
    assert await by_http.complete(FRANCE, temperature=0) == await by_handle.complete(
        FRANCE, temperature=0
    )


async def test_stream_gives_the_whole_answer(clients: tuple[LLMClient, LLMClient]) -> None:
    req = ChatCompletionRequest.model_validate(
        {"messages": STORY, "temperature": 0, "seed": 5, "max_tokens": 24}
    )
    for client in clients:
        whole = await client.chat(req)
        chunks = [chunk async for chunk in client.chat_stream(req)]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
        assert len({c.id for c in chunks}) == 1
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert streamed == whole.text
        assert len(chunks) > 3  # really piece by piece (pieces ready together are joined)
        assert "".join([p async for p in client.stream_text(req)]) == whole.text


async def test_openai_client_unchanged(llm_url: str, served_id: str) -> None:
    client = AsyncOpenAI(base_url=f"{llm_url}/v1", api_key="unused", max_retries=0)
    try:
        models = await client.models.list()
        model = models.data[0].id
        assert model == served_id
        messages: Any = FRANCE
        whole = await client.chat.completions.create(
            model=model, messages=messages, temperature=0, seed=1
        )
        assert "Paris" in (whole.choices[0].message.content or "")
        assert whole.usage is not None
        assert whole.usage.completion_tokens > 0
        stream = await client.chat.completions.create(
            model=model, messages=messages, temperature=0, seed=1, stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == whole.choices[0].message.content
        short = await client.chat.completions.create(
            model=model, messages=cast(Any, STORY), max_tokens=4, stop=["\n"]
        )
        assert short.choices[0].finish_reason in ("length", "stop")
        assert short.usage is not None
        assert short.usage.completion_tokens <= 4
    finally:
        await client.close()


async def test_http_stop_and_max_tokens(llm_url: str, http: httpx.AsyncClient) -> None:
    url = f"{llm_url}/v1/chat/completions"
    cut = (await http.post(url, json={"messages": STORY, "max_tokens": 3})).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    stopped = await http.post(url, json={"messages": FRANCE, "temperature": 0, "stop": "Paris"})
    body = stopped.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "Paris" not in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["message"]["content"].startswith("The capital")


async def test_both_paths_report_the_generation_time_whole_and_streamed(llm_url: str) -> None:
    request = ChatCompletionRequest.model_validate(
        {"messages": FRANCE, "temperature": 0, "max_tokens": 8}
    )
    async with (
        LLMClient(mode="handle") as by_handle,
        LLMClient(mode="http", base_url=llm_url) as by_http,
    ):
        for client in (by_handle, by_http):
            whole = await client.chat(request)
            chunks = [chunk async for chunk in client.chat_stream(request)]
            assert whole.model_time_ms is not None
            assert whole.model_time_ms > 0
            # Only the last chunk carries it: the whole generation's time.
            assert [c.model_time_ms is not None for c in chunks][-2:] == [False, True]
            assert (chunks[-1].model_time_ms or 0) > 0


async def test_http_stream_ends_with_done(llm_url: str, http: httpx.AsyncClient) -> None:
    body = {"messages": FRANCE, "temperature": 0, "stream": True, "max_tokens": 12}
    async with http.stream("POST", f"{llm_url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line]
    # The last chunk's event has one comment line: the generation's model time.
    (comment,) = [line for line in lines if not line.startswith("data: ")]
    assert lines.index(comment) == len(lines) - 3
    assert float(comment.removeprefix(f": {MODEL_TIME_HEADER} ")) > 0
    lines.remove(comment)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"messages": FRANCE, "max_tokens": MAX_COMPLETION_TOKENS + 1}, 400, "invalid_request"),
        ({"messages": []}, 400, "invalid_request"),
        ({"messages": "hello"}, 400, "invalid_request"),
        ({"messages": FRANCE, "temperature": "hot"}, 400, "invalid_request"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_request"),
        ({"messages": [{"role": "user", "content": TOO_LONG}]}, 413, "too_large"),
        ({"messages": [{"role": "user", "content": TOO_LONG}], "stream": True}, 413, "too_large"),
        ({"messages": [{"role": "user", "content": "x" * 32_001}]}, 413, "too_large"),
    ],
)
async def test_bad_request_gets_the_error_shape(
    llm_url: str, http: httpx.AsyncClient, body: dict[str, Any], status: int, code: str
) -> None:
    response = await http.post(f"{llm_url}/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_malformed_json_then_served(llm_url: str, http: httpx.AsyncClient) -> None:
    url = f"{llm_url}/v1/chat/completions"
    response = await http.post(
        url, content=b'{"messages": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    good = await http.post(url, json={"messages": FRANCE, "temperature": 0})
    assert good.status_code == 200
    assert "Paris" in good.json()["choices"][0]["message"]["content"]


async def test_client_raises_typed_errors(clients: tuple[LLMClient, LLMClient]) -> None:
    too_long = ChatCompletionRequest(messages=[ChatMessage(role="user", content=TOO_LONG)])
    for client in clients:
        with pytest.raises(TooLargeError):
            await client.chat(too_long)
        with pytest.raises(TooLargeError):
            [c async for c in client.chat_stream(too_long)]
    _, by_http = clients
    with pytest.raises(InvalidRequestError):
        await by_http._call("chat", {"messages": []}, "/v1/chat/completions")


async def replica_status() -> dict[str, Any]:
    from ray import serve

    handle = serve.get_deployment_handle("LLMDeployment", app_name="llm")
    status: dict[str, Any] = await handle.status.remote()
    return status


async def test_disconnect_stops_the_generation(llm_url: str, http: httpx.AsyncClient) -> None:
    before = await replica_status()
    body = {"messages": STORY, "max_tokens": 1000, "stream": True}
    async with http.stream("POST", f"{llm_url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("data: ")
            if seen >= 3:
                break  # leave mid-answer: the connection is closed
    deadline = time.monotonic() + 60
    while True:
        status = await replica_status()
        if status["cancelled"] > before["cancelled"] and not status["busy"]:
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)
    good = await http.post(
        f"{llm_url}/v1/chat/completions", json={"messages": FRANCE, "temperature": 0}
    )
    assert "Paris" in good.json()["choices"][0]["message"]["content"]


async def test_handle_stream_closed_early_frees_the_model(
    clients: tuple[LLMClient, LLMClient],
) -> None:
    by_handle, _ = clients
    before = await replica_status()
    req = ChatCompletionRequest.model_validate({"messages": STORY, "max_tokens": 1000})
    stream = by_handle.stream_text(req)
    assert await anext(stream)
    await stream.aclose()
    deadline = time.monotonic() + 60
    while (status := await replica_status())["busy"] or status["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)
    assert "Paris" in await by_handle.complete(FRANCE, temperature=0)


# --- overload -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llm_url(serve_instance: LocalServe, llm_url: str) -> Iterator[str]:
    """A second copy of the app that takes one request and queues one more."""
    from ray import serve

    args = {"profile": "cpu", "max_ongoing_requests": 1, "max_queued_requests": 1}
    serve.run(build_app(args), name="llm-tiny", route_prefix="/llm-tiny")
    url = f"{serve_instance.http_url}/llm-tiny"
    try:
        wait_healthy(url)
        yield url
    finally:
        serve.delete("llm-tiny")


async def test_overload_answers_503_with_retry_after(
    tiny_llm_url: str, http: httpx.AsyncClient
) -> None:
    body = {"messages": STORY, "max_tokens": 24}
    responses = await asyncio.gather(
        *(http.post(f"{tiny_llm_url}/v1/chat/completions", json=body) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert 1 <= statuses.count(200) <= 4, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1"
    # Once the load is gone the deployment answers again.
    after = await http.post(f"{tiny_llm_url}/v1/chat/completions", json=body)
    assert after.status_code == 200


async def test_overload_through_handles_is_unavailable(tiny_llm_url: str) -> None:
    req = ChatCompletionRequest.model_validate({"messages": STORY, "max_tokens": 24})
    async with LLMClient(mode="handle", app_name="llm-tiny") as client:
        results = await asyncio.gather(
            *(client.chat(req) for _ in range(8)), return_exceptions=True
        )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert refused, "no request was refused"
    assert all(isinstance(r, UnavailableError) for r in refused), refused
    assert len(refused) < len(results)
