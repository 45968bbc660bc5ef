"""Client of the ``/llm`` service: OpenAI chat completions, whole or streamed.

Both paths take and give the same :mod:`handler_base.inference` models::

    async with LLMClient(model="SmolLM2-135M-Instruct") as llm:
        answer = await llm.complete([ChatMessage(role="user", content="Hi")], max_tokens=64)
        async for piece in llm.stream_text(request):
            print(piece, end="")

The Serve app ``llm`` comes in two forms, and the handle path finds either:

- The cpu profile's ``LLMDeployment`` (``ray_inference``): its handle methods ``chat`` and
  ``chat_stream`` take and give the models above; any ``model`` is answered.
- The gpu profile's Ray Serve LLM app (``ray.serve.llm:build_openai_app``): one server
  deployment per model, ``LLMServer:<model id>``, found and called as
  :mod:`handler_base.clients.serve_llm` says (and why).

The HTTP path (``POST {llm_url}/v1/chat/completions``, SSE when streaming) serves both
forms too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from handler_base.clients.base import ServiceClient
from handler_base.clients.serve_llm import (
    SERVE_LLM_REQUEST_TYPE,
    ServeLLMApp,
    ServerSideModel,
    chunk_from_openai,
    find_serve_llm_app,
    model_list_from_openai,
    response_from_openai,
    response_from_openai_chunks,
    serve_llm_events,
)
from handler_base.inference import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ModelList,
)
from handler_base.services import LLM
from handler_base.settings import Settings

__all__ = ["LLMClient", "ServerSideModel"]


class LLMClient(ServiceClient):
    """Chat completions from the platform's LLM deployment (handle first, HTTP second).

    Attributes:
        model: Sent as ``model`` when a request names none (None: the service's own; for
            Ray Serve LLM, its only model). The cpu deployment serves whatever it is asked;
            Ray Serve LLM (gpu) wants its model id.
        serve_llm_request_type: The class Ray Serve LLM's server takes, as
            ``module:qualname`` (see
            :class:`~handler_base.clients.serve_llm.ServerSideModel`).
    """

    model_service = LLM
    serve_llm_request_type: str = SERVE_LLM_REQUEST_TYPE

    def __init__(
        self, settings: Settings | None = None, *, model: str | None = None, **options: Any
    ) -> None:
        """Make a client; ``options`` are those of :class:`ServiceClient`."""
        super().__init__(settings, **options)
        self.model = model
        self._serve_llm: ServeLLMApp | None = None

    @property
    def serves_through_ray_serve_llm(self) -> bool:
        """Whether the handle path found Ray Serve LLM's app (after the first call)."""
        return self._handle is not None and self._serve_llm is not None

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """The whole answer of a chat completion request (``stream`` is ignored).

        Raises:
            PlatformError: The typed error of what went wrong (``too_large`` for a
                prompt over the context, ``unavailable`` when overloaded...).
        """
        request = self._prepared(request, stream=False)
        if await self._through_serve_llm():
            events = self._serve_llm_events(request, include_usage=True)
            return await response_from_openai_chunks(events, target=self._target)
        result = await self._call("chat", request, "/v1/chat/completions")
        return response_from_openai(result)

    async def chat_stream(
        self, request: ChatCompletionRequest
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The answer as OpenAI stream chunks, as they are generated.

        Close the generator (``aclose()``) when leaving it early: the deployment then
        stops generating.

        Raises:
            PlatformError: As for :meth:`chat`.
        """
        request = self._prepared(request, stream=True)
        if await self._through_serve_llm():
            events = self._serve_llm_events(request, include_usage=False)
        else:
            events = self._stream("chat_stream", request, "/v1/chat/completions")
        try:
            async for item in events:
                chunk = chunk_from_openai(item)
                if chunk is not None:
                    yield chunk
        finally:
            await events.aclose()

    async def stream_text(self, request: ChatCompletionRequest) -> AsyncGenerator[str, None]:
        """The answer's text, piece by piece (the content of each chunk)."""
        chunks = self.chat_stream(request)
        try:
            async for chunk in chunks:
                for piece in chunk.texts:
                    yield piece
        finally:
            await chunks.aclose()

    async def complete(
        self,
        messages: Sequence[ChatMessage | dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
    ) -> str:
        """The answer's text for ``messages``, with the common options."""
        options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stop": stop,
            "seed": seed,
        }
        request = ChatCompletionRequest.model_validate(
            {"messages": list(messages), **{k: v for k, v in options.items() if v is not None}}
        )
        return (await self.chat(request)).text

    async def models(self) -> ModelList:
        """The models the service serves."""
        if await self._through_serve_llm():
            assert self._serve_llm is not None
            return self._serve_llm.model_list()
        result = await self._call("models", None, "/v1/models", http_method="GET")
        return model_list_from_openai(result, self._target())

    def _prepared(self, request: ChatCompletionRequest, *, stream: bool) -> ChatCompletionRequest:
        """``request`` with ``stream`` set for the path and the default model filled in."""
        update: dict[str, Any] = {}
        if request.stream != stream:
            update["stream"] = stream
        if request.model is None and self.model is not None:
            update["model"] = self.model
        if not update:
            return request
        # model_copy(update=) would not mark the fields set, and HTTP sends set fields.
        data = request.model_dump(exclude_unset=True)
        return ChatCompletionRequest.model_validate({**data, **update})

    # --- the hooks into Ray Serve LLM's app (handler_base.clients.serve_llm) -------------------

    def _find_handle(self) -> Any:
        """``LLMDeployment`` of the app when there is one, else Ray Serve LLM's server.

        Raises:
            KeyError: The app has neither (or is not running).
        """
        self._serve_llm = None
        try:
            return super()._find_handle()
        except KeyError:
            pass
        app = find_serve_llm_app(
            self.app,
            looked_for=self.deployment,
            client_name=type(self).__name__,
            lookup_timeout_s=self.handle_lookup_timeout_s,
        )
        self._serve_llm = app
        return app.default_server(self.model, client_name=type(self).__name__).handle

    def _target(self) -> str:
        if self._handle is None or self._serve_llm is None:
            return super()._target()
        return f"{type(self).__name__}({self.app}/{self._serve_llm.target_deployment})"

    def _describe_handle(self) -> str:
        if self._serve_llm is None:
            return super()._describe_handle()
        return self._serve_llm.describe()

    async def _through_serve_llm(self) -> bool:
        """Choose the path; True when it is the handle to Ray Serve LLM's servers."""
        return await self.path() == "handle" and self._serve_llm is not None

    def _serve_llm_events(
        self, request: ChatCompletionRequest, *, include_usage: bool
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The JSON of each SSE event Ray Serve LLM's server streams for ``request``."""
        assert self._serve_llm is not None
        return serve_llm_events(
            self._serve_llm,
            request,
            request_type=self.serve_llm_request_type,
            include_usage=include_usage,
            stream_through=self._stream_through,
            target=self._target,
        )
