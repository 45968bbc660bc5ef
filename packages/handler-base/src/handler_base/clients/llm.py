"""Client of the ``/llm`` service: OpenAI chat completions, whole or streamed.

Inside Ray it calls ``LLMDeployment.chat`` / ``chat_stream`` through a handle; outside,
``POST {llm_url}/v1/chat/completions`` (SSE when streaming). Both paths take and give
the same :mod:`handler_base.inference` models::

    async with LLMClient() as llm:
        answer = await llm.complete([ChatMessage(role="user", content="Hi")], max_tokens=64)
        async for piece in llm.stream_text(request):
            print(piece, end="")
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from handler_base.clients.base import ServiceClient
from handler_base.inference import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ModelList,
)
from handler_base.settings import Settings


class LLMClient(ServiceClient):
    """Chat completions from the platform's LLM deployment (handle first, HTTP second).

    Attributes:
        model: Sent as ``model`` when a request names none (None: the service's own).
            The cpu deployment serves whatever it is asked; Ray Serve LLM (gpu) wants its
            model id.
    """

    service = "llm"
    app_name = "llm"
    deployment_name = "LLMDeployment"

    def __init__(
        self, settings: Settings | None = None, *, model: str | None = None, **options: Any
    ) -> None:
        """Make a client; ``options`` are those of :class:`ServiceClient`."""
        super().__init__(settings, **options)
        self.model = model

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """The whole answer of a chat completion request (``stream`` is ignored).

        Raises:
            PlatformError: The typed error of what went wrong (``too_large`` for a
                prompt over the context, ``unavailable`` when overloaded...).
        """
        request = self._prepared(request, stream=False)
        result = await self._call("chat", request, "/v1/chat/completions")
        return ChatCompletionResponse.model_validate(result)

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
        chunks = self._stream("chat_stream", request, "/v1/chat/completions")
        try:
            async for item in chunks:
                yield ChatCompletionChunk.model_validate(item)
        finally:
            await chunks.aclose()

    async def stream_text(self, request: ChatCompletionRequest) -> AsyncGenerator[str, None]:
        """The answer's text, piece by piece (the content of each chunk)."""
        chunks = self.chat_stream(request)
        try:
            async for chunk in chunks:
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield choice.delta.content
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
        result = await self._call("models", None, "/v1/models", http_method="GET")
        return ModelList.model_validate(result)

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
