"""Ray Serve LLM's app as :class:`~handler_base.clients.llm.LLMClient` calls it.

The gpu profile serves ``llm`` as Ray Serve LLM's app (``ray.serve.llm:build_openai_app``,
Ray 2.60): an ingress deployment ``OpenAiIngress`` and one server deployment per model,
named ``LLMServer:<model id>`` (``/`` written ``--``, ``.`` written ``_``).
:func:`find_serve_llm_app` finds the servers among the app's deployments and asks each
``llm_config()`` for its model id; every request is sent with the model id
(:attr:`~handler_base.clients.llm.LLMClient.model`, else the only model).

Why the client calls the server the way it does (read from Ray 2.60's
``ray/llm/_internal/serve/core/server/llm_server.py`` and ``core/ingress/ingress.py``):
``LLMServer.chat(request, raw_request_info=None)`` wants vLLM's pydantic
``ChatCompletionRequest`` (a plain dict breaks on ``request.model``), and answers with
vLLM's objects when not streaming; neither class can be imported where vLLM is not
installed (``ray.llm._internal.serve.core.configs.openai_api_models`` imports vLLM), as in
the handler image. ``OpenAiIngress.chat(body, request)`` gives a starlette ``Response``
(a ``StreamingResponse`` when streaming, which no handle can carry). So:

- The request travels as :class:`ServerSideModel`: it pickles as "import this class and
  validate this dict", so vLLM's own ``ChatCompletionRequest`` is built in the server's
  process from the request's JSON, and this process never imports vLLM.
- The server is always asked to stream (:func:`serve_llm_events`): it then yields lists
  of OpenAI SSE strings (``data: {...}``), plain text any process can read; whole answers
  are assembled from the chunks (:func:`response_from_openai_chunks`, with
  ``stream_options.include_usage`` for the token counts).
- A refusal (vLLM's ``ErrorResponse`` object, e.g. a prompt over the context) cannot be
  unpickled here, so it is raised as ``internal`` saying so; the model id is checked
  before sending, so an unknown model is ``not_found`` with the models served.

The converters from OpenAI's wire shape (:func:`response_from_openai`,
:func:`chunk_from_openai`, :func:`model_list_from_openai`) serve the HTTP path too
(``POST {llm_url}/v1/chat/completions``, SSE when streaming), which reaches both forms of
the app; vLLM's answers carry fields our models do not (``logprobs``,
``system_fingerprint``...), which are dropped on both paths. LoRA model ids
(``base:adapter``) and the data-parallel / prefill-decode builders, whose servers have
other names, are not found through a handle: those use HTTP.
"""

from __future__ import annotations

import importlib
import json
import logging
import operator
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from handler_base.clients.base import (
    SSE_DONE,
    DeploymentNotFound,
    error_from_body,
    serve_app_deployments,
    unreadable_answer,
)
from handler_base.errors import (
    InternalError,
    InvalidRequestError,
    NotFoundError,
    PlatformError,
    error_for_status,
)
from handler_base.inference import (
    MODEL_TIME_FIELD,
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    ChunkDelta,
    ModelCard,
    ModelList,
    Usage,
)

logger = logging.getLogger(__name__)

SERVE_LLM_SERVER_PREFIX = "LLMServer:"
"""How Ray Serve LLM names a model's server deployment (``build_llm_deployment``)."""
SERVE_LLM_REQUEST_TYPE = (
    "ray.llm._internal.serve.core.configs.openai_api_models:ChatCompletionRequest"
)
"""The request class ``LLMServer.chat`` takes (vLLM's, subclassed by Ray), as
``module:qualname``; it is imported only in the server's process."""

FinishReason = Literal["stop", "length"]


def serve_llm_deployment_name(model_id: str) -> str:
    """The server deployment Ray Serve LLM 2.60 makes for ``model_id``.

    ``LLMServer:`` and the id, ``/`` written ``--`` and ``.`` written ``_``, unless the
    model's ``deployment_config`` names the deployment (``core/server/builder.py``).
    """
    return SERVE_LLM_SERVER_PREFIX + model_id.replace("/", "--").replace(".", "_")


# --- requests the server's process builds -------------------------------------------------


class _ImportedWhereUnpickled:
    """Pickles as the object at ``module:qualname``, imported by the unpickling process."""

    def __init__(self, path: str) -> None:
        module, _, qualname = path.partition(":")
        if not module or not qualname:
            raise ValueError(f"expected 'module:qualname', got {path!r}")
        self.module = module
        self.qualname = qualname

    def __reduce__(self) -> tuple[Any, ...]:
        return (operator.attrgetter(self.qualname), (_ImportedModule(self.module),))


class _ImportedModule:
    """Pickles as the module ``name``, imported by the unpickling process."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:
        return (importlib.import_module, (self.name,))


class ServerSideModel:
    """A pydantic model that is built where it is unpickled, from JSON data.

    ``pickle`` (and so a Ray handle call) carries it as "import ``type_path`` and call its
    ``model_validate`` with ``data``", using only the standard library: the receiving
    process gets an instance of its own class, and the sending process never imports that
    class (vLLM's request types, for a caller without vLLM).

    Attributes:
        type_path: The class, as ``module:qualname``.
        data: Its JSON data.
    """

    def __init__(self, type_path: str, data: Mapping[str, Any]) -> None:
        self._type = _ImportedWhereUnpickled(type_path)
        self.type_path = type_path
        self.data = dict(data)

    def __reduce__(self) -> tuple[Any, ...]:
        return (operator.methodcaller("model_validate", self.data), (self._type,))

    def build(self) -> Any:
        """The model itself, built here (needs the class importable in this process)."""
        module = importlib.import_module(self._type.module)
        return operator.attrgetter(self._type.qualname)(module).model_validate(self.data)

    def __repr__(self) -> str:
        return f"ServerSideModel({self.type_path!r}, {self.data!r})"


StreamThrough = Callable[[Any, str, ServerSideModel], AsyncGenerator[Any, None]]
"""How the client streams a handle method's answer: called with a ``stream=True`` handle,
the method and its argument (:meth:`ServiceClient._stream_through
<handler_base.clients.base.ServiceClient._stream_through>`)."""


# --- finding the app's servers ------------------------------------------------------------


@dataclass
class ServeLLMServer:
    """One model's server deployment of a Ray Serve LLM app."""

    deployment: str
    model_id: str | None
    """From its ``llm_config()``; None when that could not be read."""
    handle: Any
    stream_handle: Any


@dataclass
class ServeLLMApp:
    """The servers of the Ray Serve LLM app the handle path calls."""

    app_name: str
    servers: list[ServeLLMServer]

    @property
    def model_ids(self) -> list[str]:
        """The models served: each server's model id, else its name without the prefix."""
        return [
            s.model_id or s.deployment.removeprefix(SERVE_LLM_SERVER_PREFIX) for s in self.servers
        ]

    @property
    def target_deployment(self) -> str:
        """The deployment errors name: the only server's, else ``LLMServer:*``."""
        if len(self.servers) == 1:
            return self.servers[0].deployment
        return f"{SERVE_LLM_SERVER_PREFIX}*"

    def model_list(self) -> ModelList:
        """The models the app serves, as the ``/v1/models`` route lists them."""
        return ModelList(data=[ModelCard(id=m) for m in self.model_ids])

    def describe(self) -> str:
        """What the handle path calls, for the log line that says which path is taken."""
        servers = ", ".join(repr(s.deployment) for s in self.servers)
        return (
            f"Ray Serve LLM's server deployment(s) {servers} of Serve app {self.app_name!r} "
            f"(models {self.model_ids}) through Ray DeploymentHandles, streaming "
            "OpenAI chunks (vLLM's own objects cannot be read in a process without vLLM)"
        )

    def server_for(self, model: str | None) -> tuple[ServeLLMServer, str | None]:
        """The server of ``model`` (the only one when None) and the model id to send.

        Raises:
            InvalidRequestError: No model named, and the app serves several.
            NotFoundError: The app serves no such model.
        """
        if model is None:
            if len(self.servers) == 1:
                return self.servers[0], self.servers[0].model_id
            raise InvalidRequestError(
                f"name the model: this Ray Serve LLM app serves {self.model_ids}"
            )
        for server in self.servers:
            if server.model_id == model:
                return server, model
        by_name = serve_llm_deployment_name(model)
        for server in self.servers:
            if server.deployment == by_name:
                return server, model
        raise NotFoundError(
            f"the Ray Serve LLM app serves no model {model!r}; it serves {self.model_ids}"
        )

    def default_server(self, model: str | None, *, client_name: str) -> ServeLLMServer:
        """The server whose handle stands for the app: ``model``'s, else the first.

        Each request goes to its own model's server (:meth:`server_for`); a ``model`` the
        app does not serve is only logged here, as each request is checked when sent.

        Args:
            model: The model the client sends when a request names none.
            client_name: The client, for the log line.
        """
        server = self.servers[0]
        if model is not None:
            try:
                server, _ = self.server_for(model)
            except NotFoundError:
                logger.warning(
                    "%s: the Ray Serve LLM app %r serves %s, not the model %r this client "
                    "sends by default",
                    client_name,
                    self.app_name,
                    self.model_ids,
                    model,
                )
        return server


def find_serve_llm_app(
    app_name: str, *, looked_for: str, client_name: str, lookup_timeout_s: float
) -> ServeLLMApp:
    """The Ray Serve LLM servers of Serve app ``app_name``, each with its model id.

    Blocks on the Serve controller and on each server's ``llm_config()``: call it where
    :meth:`~handler_base.clients.base.ServiceClient._find_handle` is called (in a worker
    thread, with Ray initialized).

    Args:
        app_name: The Serve application.
        looked_for: The deployment the client looked for first, named when the app has
            no server either.
        client_name: The client, for the log lines.
        lookup_timeout_s: How long each server may take to give its ``llm_config()``.

    Raises:
        DeploymentNotFound: The app has no server (or is not running).
    """
    deployments = serve_app_deployments(app_name)
    names = sorted(d for d in deployments if d.startswith(SERVE_LLM_SERVER_PREFIX))
    if not names:
        raise DeploymentNotFound(
            f"Serve app {app_name!r} has no deployment {looked_for!r} "
            f"and no Ray Serve LLM server ({SERVE_LLM_SERVER_PREFIX}<model>); it has "
            f"{sorted(deployments)}"
        )
    servers = [
        _serve_llm_server(app_name, name, client_name=client_name, timeout_s=lookup_timeout_s)
        for name in names
    ]
    return ServeLLMApp(app_name, servers)


def _serve_llm_server(
    app_name: str, deployment: str, *, client_name: str, timeout_s: float
) -> ServeLLMServer:
    """One server deployment, with the model id its ``llm_config()`` gives."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=app_name)
    model_id: str | None = None
    try:
        config = handle.llm_config.remote().result(timeout_s=timeout_s)
        model_id = getattr(config, "model_id", None)
    except Exception as exc:
        logger.warning(
            "%s: could not read the model id of %r (%r); matching models by its name",
            client_name,
            deployment,
            exc,
        )
    return ServeLLMServer(
        deployment=deployment,
        model_id=model_id,
        handle=handle,
        stream_handle=handle.options(stream=True),
    )


# --- calling the app's servers ------------------------------------------------------------


async def serve_llm_events(
    app: ServeLLMApp,
    request: ChatCompletionRequest,
    *,
    request_type: str,
    include_usage: bool,
    stream_through: StreamThrough,
    target: Callable[[], str],
) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON of each SSE event the server of ``request``'s model streams for it.

    Args:
        app: The app's servers.
        request: The request, its model filled in when the client has a default.
        request_type: The class the server takes, as ``module:qualname``.
        include_usage: Ask for the usage-only last chunk (the token counts).
        stream_through: How the client streams through the server's handle.
        target: What the client calls, for error messages.

    Raises:
        PlatformError: An unknown model (before sending), an error event, or a
            refusal this process cannot read.
    """
    server, model_id = app.server_for(request.model)
    body = request.model_dump(mode="json", exclude_unset=True)
    body["stream"] = True
    if model_id is not None:
        body["model"] = model_id
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    payload = ServerSideModel(request_type, body)
    batches = stream_through(server.stream_handle, "chat", payload)
    try:
        async for batch in batches:
            for item in batch if isinstance(batch, list) else [batch]:
                for data in _sse_data(item, target()):
                    if data == SSE_DONE:
                        return
                    yield _event_json(data, target())
    except InternalError as exc:
        if unreadable_answer(exc):
            raise InternalError(
                f"{target()} refused the request with "
                "vLLM's ErrorResponse object, which cannot be read in a process "
                "without vLLM; POST the same request to the HTTP route "
                "/v1/chat/completions for vLLM's message"
            ) from exc
        raise
    finally:
        await batches.aclose()


async def response_from_openai_chunks(
    events: AsyncGenerator[dict[str, Any], None], *, target: Callable[[], str]
) -> ChatCompletionResponse:
    """The whole answer, assembled from OpenAI stream chunks (closes ``events``).

    Args:
        events: The JSON of each chunk, as :func:`serve_llm_events` gives it.
        target: What the client calls, for error messages.

    Raises:
        PlatformError: An error event, or a stream without a chunk.
    """
    first: ChatCompletionChunk | None = None
    pieces: list[str] = []
    finish: FinishReason | None = None
    usage: Usage | None = None
    try:
        async for data in events:
            if isinstance(data.get("usage"), Mapping):
                usage = _usage(data["usage"])
            chunk = chunk_from_openai(data)
            if chunk is None:
                continue
            first = first or chunk
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
    finally:
        await events.aclose()
    if first is None:
        raise InternalError(f"{target()} ended its answer without a chunk")
    return ChatCompletionResponse(
        id=first.id,
        created=first.created,
        model=first.model,
        choices=[
            ChatCompletionChoice(
                message=AssistantMessage(content="".join(pieces)), finish_reason=finish
            )
        ],
        usage=usage or Usage(),
    )


# --- OpenAI's wire shape to the platform's models --------------------------------------------


def response_from_openai(data: Any) -> ChatCompletionResponse:
    """A :class:`ChatCompletionResponse` from an OpenAI chat completion.

    Fields the platform does not use, such as vLLM's ``logprobs``, are dropped.

    Raises:
        PlatformError: An error body, or one that is not a chat completion.
    """
    if isinstance(data, ChatCompletionResponse):
        return data
    data = _jsonable_result(data)
    _raise_if_error(data, "the LLM")
    try:
        choices = [
            {
                "index": choice.get("index", 0),
                "message": {"content": (choice.get("message") or {}).get("content") or ""},
                "finish_reason": _finish_reason(choice.get("finish_reason")),
            }
            for choice in data["choices"]
        ]
        return ChatCompletionResponse.model_validate(
            {
                **_pick(data, "id", "created", "model", MODEL_TIME_FIELD),
                "choices": choices,
                "usage": _usage(data.get("usage") or {}),
            }
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise InternalError(
            f"the LLM answered something that is not a chat completion: {exc}"
        ) from exc


def chunk_from_openai(data: Any) -> ChatCompletionChunk | None:
    """A :class:`ChatCompletionChunk` from an OpenAI stream chunk, or None.

    None for a chunk without choices (the usage-only last chunk that
    ``stream_options.include_usage`` asks for). Fields the platform does not use are dropped.

    Raises:
        PlatformError: An error event, or one that is not a stream chunk.
    """
    if isinstance(data, ChatCompletionChunk):
        return data
    data = _jsonable_result(data)
    _raise_if_error(data, "the LLM")
    try:
        if not data["choices"]:
            return None
        choices = []
        for choice in data["choices"]:
            delta = choice.get("delta") or {}
            choices.append(
                ChunkChoice(
                    index=choice.get("index", 0),
                    delta=ChunkDelta(
                        role="assistant" if delta.get("role") == "assistant" else None,
                        content=delta.get("content"),
                    ),
                    finish_reason=_finish_reason(choice.get("finish_reason")),
                )
            )
        return ChatCompletionChunk.model_validate(
            {**_pick(data, "id", "created", "model", MODEL_TIME_FIELD), "choices": choices}
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise InternalError(f"the LLM streamed something that is not a chunk: {exc}") from exc


def model_list_from_openai(data: Any, target: str) -> ModelList:
    """A :class:`ModelList` from an OpenAI model list (``GET /v1/models``).

    Raises:
        PlatformError: An error body, or one that is not a model list.
    """
    data = _jsonable_result(data)
    _raise_if_error(data, target)
    try:
        return ModelList(
            data=[
                ModelCard.model_validate(_pick(card, "id", "created", "owned_by"))
                for card in data["data"]
            ]
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise InternalError(f"{target} answered a model list it cannot read: {exc}") from exc


def _pick(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: data[k] for k in keys if data.get(k) is not None}


def _usage(data: Mapping[str, Any]) -> Usage:
    return Usage.model_validate(_pick(data, "prompt_tokens", "completion_tokens", "total_tokens"))


def _finish_reason(value: Any) -> FinishReason | None:
    if value is None or value in ("stop", "length"):
        return value  # type: ignore[no-any-return]
    # vLLM also says "abort" (the engine dropped the request) and "tool_calls" (no tools
    # are sent): neither is an answer the platform can pass on as finished.
    raise InternalError(f"the LLM stopped for a reason the platform does not take: {value!r}")


def _jsonable_result(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    return data


def _raise_if_error(data: Any, target: str) -> None:
    """Raise the typed error of an error body; return when ``data`` is none.

    vLLM's ``{"error": {message, type, code}}`` (``code`` the HTTP status), its older
    ``{"object": "error", ...}``, or the platform's ``{"error": {"code": "not_found"...}}``.
    """
    if not isinstance(data, Mapping):
        return
    error = data.get("error")
    if isinstance(error, Mapping):
        platform_error = error_from_body(data)
        if platform_error is not None:
            raise platform_error
        raise _error_for_code(error.get("code"), error.get("message") or error, target)
    if data.get("object") == "error":
        raise _error_for_code(data.get("code"), data.get("message") or data, target)


def _error_for_code(code: Any, message: Any, target: str) -> PlatformError:
    status = code if isinstance(code, int) and code >= 400 else 500
    return error_for_status(status, f"{target} answered {status}: {message}")


# --- Ray Serve LLM's stream ---------------------------------------------------------------


def _sse_data(item: Any, target: str) -> list[str]:
    """The ``data`` of each event in one string of a Ray Serve LLM stream."""
    if isinstance(item, str):
        return [
            line.removeprefix("data:").strip()
            for line in item.splitlines()
            if line.startswith("data:")
        ]
    # Not a string: an object the server streams only to refuse (vLLM's ErrorResponse),
    # readable here only where its class is installed.
    data = _jsonable_result(item)
    _raise_if_error(data, target)
    raise InternalError(f"{target} streamed an unexpected {type(item).__name__}")


def _event_json(data: str, target: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise InternalError(f"{target} streamed an event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise InternalError(f"{target} streamed an event that is not an object: {data[:200]!r}")
    _raise_if_error(event, target)
    return event
