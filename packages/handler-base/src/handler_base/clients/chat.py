"""Client of the chat handler (``/chat``): RAG answers, whole or streamed.

Inside Ray it calls ``ChatDeployment.chat`` / ``chat_stream`` through a handle; outside,
``POST {chat_url}`` (the bare route prefix) with a ChatRequest, and with ``stream: true``
for the stream, whose server-sent events are ``text`` (``{"text": piece}``) then
``done`` (the whole ChatResponse)::

    async with ChatClient() as chat:
        answer = await chat.chat(ChatRequest(query="What does the ZX-41 cost?"))
        async for item in chat.chat_stream(ChatRequest(query="...")):
            if isinstance(item, str):
                print(item, end="")  # a piece of the answer
            else:
                print(item.sources)  # the ChatResponse, last
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar

from handler_base.clients.base import ServerSentEvent, ServiceClient
from handler_base.errors import InternalError, validate_as
from handler_base.messages import ChatRequest, ChatResponse


class ChatClient(ServiceClient):
    """RAG answers from the ``ChatDeployment`` of the ``chat`` Serve app (handle, then HTTP)."""

    service: ClassVar[str] = "chat"
    app_name: ClassVar[str] = "chat"
    deployment_name: ClassVar[str] = "ChatDeployment"
    passes_trace_context: ClassVar[bool] = True
    route: ClassVar[str] = ""
    """``POST /chat`` itself: the bare prefix (the app routes it to its ``/``)."""

    async def chat(self, request: ChatRequest | Mapping[str, Any]) -> ChatResponse:
        """The whole answer to ``request``, with its sources (``stream`` is ignored).

        Raises:
            InvalidRequestError: The request is malformed.
            TooLargeError: It breaks a size limit.
            PlatformError: What the chat handler or a model service reported.
        """
        prepared = _with_stream(validate_as(ChatRequest, request), stream=False)
        result = await self._call("chat", prepared, self.route)
        return ChatResponse.model_validate(result)

    async def chat_stream(
        self, request: ChatRequest | Mapping[str, Any]
    ) -> AsyncGenerator[str | ChatResponse, None]:
        """The answer as it is written: ``str`` pieces, then one ChatResponse.

        Close the generator (``aclose()``) when leaving it early: the chat handler
        then stops generating.

        Raises:
            PlatformError: As for :meth:`chat`, before or during the stream.
        """
        prepared = _with_stream(validate_as(ChatRequest, request), stream=True)
        items = self._stream("chat_stream", prepared, self.route)
        try:
            async for item in items:
                if isinstance(item, str | ChatResponse):
                    yield item
                else:
                    yield ChatResponse.model_validate(item)
        finally:
            await items.aclose()

    def _decode_event(self, event: ServerSentEvent) -> Any:
        """A ``text`` event is its piece (a ``str``), ``done`` the ChatResponse."""
        if event.event == "text":
            try:
                data = json.loads(event.data)
            except ValueError:
                return event.data
            if isinstance(data, dict) and isinstance(data.get("text"), str):
                return data["text"]
            raise InternalError(f"{self._target()} sent a text event without text")
        if event.event == "done":
            return ChatResponse.model_validate_json(event.data)
        return super()._decode_event(event)


def _with_stream(request: ChatRequest, *, stream: bool) -> ChatRequest:
    """``request`` with ``stream`` set and marked as set (HTTP sends the set fields)."""
    if request.stream == stream and (not stream or "stream" in request.model_fields_set):
        return request
    data = request.model_dump(exclude_unset=True)
    return ChatRequest.model_validate({**data, "stream": stream})
