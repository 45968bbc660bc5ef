"""Base of the model clients: a Ray Serve DeploymentHandle inside Ray, HTTP outside.

A concrete client names the service it calls, and maps each operation to a handle method
and an HTTP route. A model service's client names its contract
(:mod:`handler_base.services`), which says the Serve application, the deployment and the
HTTP fallback's setting; other clients set those three names themselves::

    class EmbeddingsClient(ServiceClient):
        model_service = EMBEDDINGS

        async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
            result = await self._call("embed", request, "/v1/embeddings")
            return EmbeddingsResponse.model_validate(result)

The deployment serves the same operation twice: as a plain async method (what the handle
calls, with the payload as its one argument) and as an HTTP route (what the fallback
posts the payload to as JSON). Both paths raise the same typed errors of
:mod:`handler_base.errors`.

In ``"auto"`` mode the path is chosen on the first call and kept: the handle when this
process is connected to Ray (a driver after ``ray.init()``, a task, an actor or a Serve
replica) and the deployment exists, HTTP otherwise. Ray is never started by a client;
a process where Ray is not initialized always uses HTTP. Which deployment the handle
calls is decided by :meth:`ServiceClient._find_handle`, which a client whose service can
be deployed in more than one form overrides (the LLM client finds Ray Serve LLM's server
deployments too).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

import httpx
from pydantic import BaseModel, ValidationError

from handler_base.errors import (
    ErrorReply,
    InternalError,
    PlatformError,
    RequestTimeoutError,
    UnavailableError,
    error_for_status,
)
from handler_base.inference import MODEL_TIME_FIELD, MODEL_TIME_HEADER
from handler_base.services import ModelService
from handler_base.settings import Settings
from handler_base.telemetry import TRACE_CONTEXT_KWARG, inject_trace_headers, trace_carrier

logger = logging.getLogger(__name__)

ClientMode = Literal["auto", "handle", "http"]
"""How a client reaches its service: choose by itself, or force one path."""

CallPath = Literal["handle", "http"]
"""The path a client's calls take."""

SSE_DONE = "[DONE]"
"""The ``data`` of the last event of an OpenAI-style stream."""


class DeploymentNotFound(KeyError):
    """:meth:`ServiceClient._find_handle` found nothing to call; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of a ``text/event-stream`` body."""

    data: str
    event: str | None = None
    id: str | None = None
    model_time_ms: str | None = None
    """An ``X-Model-Time-Ms`` comment inside the event (the model service's extension)."""


class ServiceClient:
    """Calls one Serve deployment through a handle when it can, over HTTP otherwise.

    Subclasses set the class attributes and write one typed method per operation on
    top of :meth:`_call` and :meth:`_stream` (or, for bodies that are not JSON, the
    lower-level :meth:`_handle_call` and :meth:`_http_request`). A client is meant to
    be made once and reused: it keeps its handle and its HTTP connection pool. It
    belongs to the event loop it is first used in. Close it with :meth:`aclose` (or
    ``async with``).

    Attributes:
        model_service: The contract of the model service called, when it is one.
        service: Settings name of the HTTP fallback (``settings.service_url(service)``).
        app_name: The Serve application.
        deployment_name: The deployment in ``app_name`` whose methods are called.
        retry_backoff_s: First wait before a retry; it doubles each time.
        retry_backoff_max_s: Longest wait between two retries.
        retry_after_max_s: Longest ``Retry-After`` honoured.
        handle_lookup_timeout_s: How long the Serve controller may take to say whether
            the deployment exists (it is slow on a busy machine).
        app_recheck_s: In auto mode, how long HTTP is kept (while Ray is up but the
            deployment absent) before the handle is looked up again.

    A handle call whose replica dies under it (killed, crashed) is sent again, once, to
    a live replica, within the same timeout (see :meth:`_retry_on_another_replica`).
    """

    model_service: ClassVar[ModelService | None] = None
    """The model service called; a subclass that sets it gets the three names below
    from it."""
    service: ClassVar[str]
    app_name: ClassVar[str]
    deployment_name: ClassVar[str]

    retry_backoff_s: ClassVar[float] = 0.1
    retry_backoff_max_s: ClassVar[float] = 2.0
    retry_after_max_s: ClassVar[float] = 5.0
    app_recheck_s: ClassVar[float] = 30.0
    handle_lookup_timeout_s: ClassVar[float] = 15.0
    replica_died_retries: ClassVar[int] = 1
    """How often a handle call is sent again when its replica died under it."""
    passes_trace_context: ClassVar[bool] = False
    """The deployment's handle methods take the caller's trace context (they are decorated
    with :func:`handler_base.telemetry.continue_trace`): handle calls pass it along."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        contract = cls.__dict__.get("model_service")
        if contract is not None:
            cls.service = contract.url_setting
            cls.app_name = contract.name
            cls.deployment_name = contract.deployment

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        mode: ClientMode = "auto",
        base_url: str | None = None,
        app_name: str | None = None,
        deployment_name: str | None = None,
    ) -> None:
        """Make a client; nothing is connected until the first call.

        Args:
            settings: Timeouts, retries, API key and the HTTP URL; read from the
                environment when None.
            mode: ``"auto"`` (handle inside Ray when the deployment exists, else HTTP),
                ``"handle"`` (handle only: :class:`UnavailableError` when there is
                none) or ``"http"``.
            base_url: HTTP base URL; ``settings.service_url(service)`` when None.
            app_name: Serve application, when not the class's.
            deployment_name: Deployment, when not the class's.
        """
        self.settings = settings or Settings()
        self.mode: ClientMode = mode
        self.app = app_name or self.app_name
        self.deployment = deployment_name or self.deployment_name
        self.base_url = (base_url or self.settings.service_url(self.service)).rstrip("/")
        self._timeout_s = self.settings.http_timeout_s
        self._handle: Any = None
        self._stream_handle: Any = None
        self._http_chosen_at: float | None = None
        self._http_for_good = False
        self._logged_path: CallPath | None = None
        self._choose_lock: asyncio.Lock | None = None
        self._http: httpx.AsyncClient | None = None

    # --- lifecycle ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP connection pool (the handle needs no closing)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the two operations subclasses build on -------------------------------------

    async def path(self) -> CallPath:
        """The path the next call takes, choosing it first when not yet chosen.

        Raises:
            UnavailableError: In ``"handle"`` mode, when no handle can be had.
        """
        if self.mode == "http":
            self._log_path("http", f"{self.base_url} over HTTP (mode 'http')")
            return "http"
        if self._handle is not None:
            return "handle"
        if self.mode == "auto" and self._http_still_chosen():
            return "http"
        if self._choose_lock is None:
            self._choose_lock = asyncio.Lock()
        async with self._choose_lock:
            if self._handle is not None:
                return "handle"
            if self.mode == "auto" and self._http_still_chosen():
                return "http"
            handle, why_not = await self._look_up_handle()
            if handle is not None:
                self._handle = handle
                self._stream_handle = handle.options(stream=True)
                self._http_chosen_at = None
                self._log_path("handle", self._describe_handle())
                return "handle"
            if self.mode == "handle":
                raise UnavailableError(f"no handle to {self._target()}: {why_not}")
            self._http_chosen_at = time.monotonic()
            self._log_path("http", f"{self.base_url} over HTTP, because {why_not}")
            return "http"

    async def _call(
        self, method: str, payload: Any, route: str, *, http_method: str = "POST"
    ) -> Any:
        """Run one operation and return its JSON-compatible result.

        Args:
            method: The deployment method the handle calls with ``payload`` (with no
                argument when ``payload`` is None).
            payload: The request: a pydantic model or JSON-compatible data. The handle
                passes it unchanged; HTTP sends it as the JSON body (models dumped in
                JSON mode, unset fields left out).
            route: The HTTP route under the base URL, e.g. ``"/v1/embeddings"``.
            http_method: The HTTP method of ``route``.

        Returns:
            What the method returned (handle), or the decoded JSON body (HTTP).
        """
        if await self.path() == "handle":
            args = () if payload is None else (payload,)
            return await self._handle_call(method, *args)
        body = None if payload is None else _jsonable(payload)
        response = await self._http_request(http_method, route, json=body)
        try:
            result = response.json()
        except ValueError as exc:
            raise InternalError(f"{self._target()} answered {route} with no JSON") from exc
        return self._with_model_time(result, response.headers.get(MODEL_TIME_HEADER))

    async def _stream(
        self, method: str, payload: Any, route: str, *, http_method: str = "POST"
    ) -> AsyncGenerator[Any, None]:
        """Run one streaming operation and yield its items as they come.

        The handle path calls the generator method ``method`` with a streaming handle
        and yields what it yields. The HTTP path reads the server-sent events of
        ``route`` until ``data: [DONE]`` or the end of the body and yields
        :meth:`_decode_event` of each.

        Args:
            method: Generator method of the deployment.
            payload: As for :meth:`_call`.
            route: HTTP route that answers ``text/event-stream``.
            http_method: The HTTP method of ``route``.

        Yields:
            The items of the stream. Close the generator (``aclose()``) when leaving
            it early, to end the call at once rather than when it is collected.
        """
        if await self.path() == "handle":
            args = () if payload is None else (payload,)
            async for item in self._handle_stream(method, *args):
                yield item
            return
        body = None if payload is None else _jsonable(payload)
        async for event in self._http_events(http_method, route, json=body):
            if event.data == SSE_DONE:
                return
            yield self._with_model_time(self._decode_event(event), event.model_time_ms)

    def _with_model_time(self, result: Any, model_time: str | None) -> Any:
        """``result`` with the model time an HTTP answer sent beside its JSON body.

        The handle path carries ``model_time_ms`` on the answer's object; HTTP sends it in
        the ``X-Model-Time-Ms`` header (or an SSE comment of that name in a stream).
        """
        if model_time is None or not isinstance(result, dict):
            return result
        try:
            return {**result, MODEL_TIME_FIELD: float(model_time)}
        except ValueError:
            logger.warning("%s sent a malformed %s", self._target(), MODEL_TIME_HEADER)
            return result

    def _decode_event(self, event: ServerSentEvent) -> Any:
        """One item of an HTTP stream from its event: the JSON ``data`` (or the text).

        Subclasses whose events carry their meaning in the event name (``event: text``)
        override this. An ``{"error": {...}}`` data, or an ``error`` event, is raised
        as its typed error.

        Raises:
            PlatformError: When the event reports an error.
        """
        try:
            data = json.loads(event.data)
        except ValueError:
            if event.event == "error":
                raise InternalError(f"{self._target()}: {event.data}") from None
            return event.data
        if isinstance(data, dict) and "error" in data:
            raise error_from_body(data) or InternalError(f"{self._target()}: {event.data}")
        if event.event == "error":
            raise InternalError(f"{self._target()}: {event.data}")
        return data

    # --- handle path --------------------------------------------------------------

    async def _handle_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of the deployment through the handle and await its result.

        Raises:
            PlatformError: What the deployment raised, or what Ray reported, as the
                platform's typed error.
        """
        handle = self._require_handle()
        kwargs = self._with_trace(kwargs)
        deadline = asyncio.timeout(self._timeout_s)
        attempt = 0
        try:
            async with deadline:
                while True:
                    response = getattr(handle, method).remote(*args, **kwargs)
                    try:
                        return await response
                    except Exception as exc:
                        if not self._retry_on_another_replica(exc, method, attempt):
                            raise
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
        except Exception as exc:
            if deadline.expired():
                response.cancel()
                raise RequestTimeoutError(
                    f"{self._target()}.{method} did not answer within {self._timeout_s:g} s"
                ) from exc
            raise self._handle_failed(exc) from exc

    async def _handle_stream(
        self, method: str, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        """Call generator ``method`` through a streaming handle; yield its items.

        Each item must come within the client's timeout. Leaving the loop early
        cancels the call.

        Raises:
            PlatformError: As for :meth:`_handle_call`.
        """
        self._require_handle()
        async for item in self._stream_through(self._stream_handle, method, *args, **kwargs):
            yield item

    async def _stream_through(
        self, stream_handle: Any, method: str, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[Any, None]:
        """:meth:`_handle_stream` through ``stream_handle`` (a ``stream=True`` handle).

        For clients whose service spreads over several deployments of its app (one per
        model, say): the same timeouts, retries and errors as the client's own handle.
        """
        kwargs = self._with_trace(kwargs)
        generator = getattr(stream_handle, method).remote(*args, **kwargs)
        finished = False
        attempt = 0
        sent_any = False
        try:
            while True:
                deadline = asyncio.timeout(self._timeout_s)
                try:
                    async with deadline:
                        item = await anext(generator)
                except StopAsyncIteration:
                    finished = True
                    return
                except Exception as exc:
                    if not sent_any and self._retry_on_another_replica(exc, method, attempt):
                        # Nothing was passed on yet: the whole call can start again.
                        await asyncio.sleep(self._backoff(attempt))
                        attempt += 1
                        generator = getattr(stream_handle, method).remote(*args, **kwargs)
                        continue
                    finished = True
                    if deadline.expired():
                        generator.cancel()
                        raise RequestTimeoutError(
                            f"{self._target()}.{method} sent nothing for {self._timeout_s:g} s"
                        ) from exc
                    raise self._handle_failed(exc) from exc
                sent_any = True
                yield item
        finally:
            if not finished:
                generator.cancel()

    def _with_trace(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` plus the current trace context, for deployments that take it."""
        if not self.passes_trace_context or TRACE_CONTEXT_KWARG in kwargs:
            return kwargs
        carrier = trace_carrier()
        return kwargs if carrier is None else {**kwargs, TRACE_CONTEXT_KWARG: carrier}

    def _retry_on_another_replica(self, exc: Exception, method: str, attempt: int) -> bool:
        """Whether a handle call that raised ``exc`` is sent again (within its timeout).

        Only when the replica died under the call (its process was killed, or crashed):
        Serve's router drops the dead replica and routes the next try to a live one, or
        waits for the one its controller starts in its place. At most
        :attr:`replica_died_retries` times, so that a request that itself kills replicas
        is not sent to each of them in turn.
        """
        from ray import exceptions as ray_exceptions

        died = isinstance(exc, ray_exceptions.RayActorError) and not isinstance(
            exc,
            ray_exceptions.RayTaskError,  # raised inside the replica, which lives
        )
        if not died or attempt >= self.replica_died_retries:
            return False
        logger.warning(
            "%s.%s: the replica died under the call (%s); trying again (%d of %d)",
            self._target(),
            method,
            type(exc).__name__,
            attempt + 1,
            self.replica_died_retries,
        )
        return True

    def _require_handle(self) -> Any:
        if self._handle is None:
            raise UnavailableError(f"no handle to {self._target()}")
        return self._handle

    def _handle_failed(self, exc: Exception) -> PlatformError:
        """The typed error for what a handle call raised; forget the handle if it is gone."""
        error = _error_from_ray(exc, self._target())
        if isinstance(error, UnavailableError):
            # The app may have been deleted or redeployed: look again next call.
            self._handle = self._stream_handle = None
        return error

    async def _look_up_handle(self) -> tuple[Any, str]:
        """A handle to the deployment, or None and the reason there is none.

        Never starts Ray: without an initialized Ray in this process there is no handle.
        The Serve controller is asked in a worker thread, within
        :attr:`handle_lookup_timeout_s`, so a busy or missing controller cannot block the
        event loop or hang the call.
        """
        # Ray cannot be initialized in a process that never imported it; this also
        # keeps the import of Ray (about a second) out of processes that use HTTP.
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            self._http_for_good = True
            return None, "Ray is not initialized in this process"
        from ray.serve.exceptions import RayServeException

        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._find_handle), self.handle_lookup_timeout_s
            ), ""
        except TimeoutError:
            return None, "the Serve controller did not answer in time"
        except DeploymentNotFound as exc:
            return None, exc.reason
        except KeyError:
            return None, f"Serve has no deployment {self.deployment!r} in app {self.app!r}"
        except RayServeException:
            return None, "Serve is not running on this Ray cluster"
        except Exception as exc:
            logger.warning("looking up %s failed: %r", self._target(), exc)
            return None, f"looking the deployment up failed ({exc!r})"

    def _find_handle(self) -> Any:
        """The handle the handle path calls: the hook that picks the deployment.

        Runs in a worker thread, with Ray initialized, within
        :attr:`handle_lookup_timeout_s`; it may block on the Serve controller (and on
        calls to the app's deployments). The default is deployment ``self.deployment`` of
        app ``self.app``. A client whose service is deployed in other forms too overrides
        it (and :meth:`_describe_handle`).

        Raises:
            KeyError: When the app has nothing this client can call
                (:class:`DeploymentNotFound` to log a reason of its own).
            RayServeException: When Serve is not running.
        """
        from ray import serve

        return serve.get_deployment_handle(self.deployment, app_name=self.app)

    def _describe_handle(self) -> str:
        """What the handle path calls, for the log line that says which path is taken."""
        return (
            f"deployment {self.deployment!r} of Serve app {self.app!r} "
            "through a Ray DeploymentHandle"
        )

    def _http_still_chosen(self) -> bool:
        if self._http_chosen_at is None:
            return False
        return self._http_for_good or time.monotonic() - self._http_chosen_at < self.app_recheck_s

    # --- HTTP path ----------------------------------------------------------------

    async def _http_request(
        self,
        http_method: str,
        route: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        files: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request to the HTTP fallback, retrying as the settings say.

        Connection errors and 503 answers are retried ``settings.http_retries`` times
        with exponential back-off (or the server's ``Retry-After``, capped); nothing
        else is retried.

        Returns:
            The 2xx response, its body read.

        Raises:
            PlatformError: The typed error for what went wrong.
        """
        return await self._send(
            http_method,
            route,
            stream=False,
            json=json,
            params=params,
            files=files,
            data=data,
            content=content,
            headers=headers,
        )

    async def _http_events(
        self,
        http_method: str,
        route: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[ServerSentEvent, None]:
        """Send one request and yield the server-sent events of its answer.

        Retries as :meth:`_http_request` before the answer starts, never after.

        Raises:
            PlatformError: The typed error for what went wrong.
        """
        response = await self._send(
            http_method,
            route,
            stream=True,
            json=json,
            headers={"Accept": "text/event-stream", **(headers or {})},
        )
        try:
            async for event in _parse_sse(response.aiter_lines()):
                yield event
        except httpx.TimeoutException as exc:
            raise RequestTimeoutError(f"{self._target()} stopped sending on {route}") from exc
        except httpx.HTTPError as exc:
            raise UnavailableError(f"{self._target()} broke off {route}: {exc!r}") from exc
        finally:
            await response.aclose()

    async def _send(
        self, http_method: str, route: str, *, stream: bool, **request: Any
    ) -> httpx.Response:
        client = self._http_client()
        url = f"{self.base_url}/{route.lstrip('/')}" if route else self.base_url
        headers = inject_trace_headers(dict(request.pop("headers", None) or {}))
        retries = self.settings.http_retries
        attempt = 0
        while True:
            # Built anew for each attempt: a multipart body is a stream read once.
            built = client.build_request(http_method, url, headers=headers, **request)
            try:
                response = await client.send(built, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= retries:
                    raise UnavailableError(
                        f"cannot reach {self._target()} at {url} "
                        f"({type(exc).__name__}, {attempt + 1} attempts)"
                    ) from exc
                delay = self._backoff(attempt)
            except httpx.TimeoutException as exc:
                raise RequestTimeoutError(
                    f"{self._target()} did not answer {http_method} {url} in time "
                    f"({type(exc).__name__})"
                ) from exc
            except httpx.HTTPError as exc:
                raise UnavailableError(f"{http_method} {url} failed: {exc!r}") from exc
            else:
                if response.status_code < 400:
                    return response
                if response.status_code == 503 and attempt < retries:
                    delay = self._retry_after(response) or self._backoff(attempt)
                    await response.aclose()
                else:
                    await response.aread()
                    await response.aclose()
                    raise self._http_failed(response)
            attempt += 1
            logger.debug("retrying %s %s in %.2f s (attempt %d)", http_method, url, delay, attempt)
            await asyncio.sleep(delay)

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {}
            if self.settings.service_api_key is not None:
                key = self.settings.service_api_key.get_secret_value()
                headers["Authorization"] = f"Bearer {key}"
            self._http = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(
                    self.settings.http_timeout_s, connect=self.settings.http_connect_timeout_s
                ),
            )
        return self._http

    def _backoff(self, attempt: int) -> float:
        base = min(self.retry_backoff_max_s, self.retry_backoff_s * 2.0**attempt)
        return base * random.uniform(0.5, 1.0)

    def _retry_after(self, response: httpx.Response) -> float | None:
        """The response's ``Retry-After`` in seconds (capped), or None."""
        value = response.headers.get("Retry-After")
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
        return min(max(seconds, 0.0), self.retry_after_max_s)

    def _http_failed(self, response: httpx.Response) -> PlatformError:
        """The typed error of an HTTP answer of status 400 or more."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = error_from_body(body)
        if error is not None:
            return error
        status = response.status_code
        detail = _detail(body) or response.text.strip()[:300] or response.reason_phrase
        return error_for_status(status, f"{self._target()} answered HTTP {status}: {detail}")

    # --- words ----------------------------------------------------------------------

    def _target(self) -> str:
        return f"{type(self).__name__}({self.app}/{self.deployment})"

    def _log_path(self, path: CallPath, how: str) -> None:
        if self._logged_path != path:
            self._logged_path = path
            logger.info("%s calls %s", type(self).__name__, how)


def serve_app_deployments(app_name: str) -> list[str]:
    """The names of the deployments of Serve application ``app_name``.

    Blocks on the Serve controller: call it from a worker thread (as
    :meth:`ServiceClient._find_handle` is called).

    Raises:
        DeploymentNotFound: When Serve runs no application of that name (or does not run).
    """
    from ray import serve

    application = serve.status().applications.get(app_name)
    if application is None:
        raise DeploymentNotFound(f"Serve app {app_name!r} is not running")
    return list(application.deployments)


def unreadable_answer(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) says an answer could not be unpickled here.

    That is: the deployment answered with an object whose class cannot be imported in
    this process.
    """
    from ray import exceptions as ray_exceptions

    for error in (exc, exc.__cause__):
        if isinstance(error, ray_exceptions.RaySystemError):
            error = error.client_exc
        if isinstance(error, ImportError):
            return True
    return False


def _jsonable(payload: Any) -> Any:
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json", exclude_unset=True)
    return payload


def _detail(body: Any) -> str | None:
    """A message from a JSON error body that is not the platform's shape."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if body.get("detail") is not None:
        return str(body["detail"])
    return None


def error_from_body(body: Any) -> PlatformError | None:
    """The typed error of the platform's ``{"error": {"code", "message"}}`` body, or None."""
    if not isinstance(body, dict) or "error" not in body:
        return None
    try:
        return PlatformError.from_reply(ErrorReply.model_validate(body))
    except ValidationError:
        return None


def _error_from_ray(exc: BaseException, target: str) -> PlatformError:
    """Map what a handle call raised to the platform's typed error.

    A PlatformError raised inside the deployment arrives wrapped in Ray's
    ``RayTaskError`` (possibly several times, through deployments that call others):
    the original is returned. A deployment, replica or actor that is gone, or a full
    queue, is :class:`UnavailableError`; any other failure inside the deployment is
    :class:`InternalError`.
    """
    from ray import exceptions as ray_exceptions
    from ray.serve import exceptions as serve_exceptions

    if isinstance(exc, ray_exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, PlatformError) and not isinstance(cause, ray_exceptions.RayTaskError):
            return cause
        if isinstance(cause, ray_exceptions.RayError):
            return _error_from_ray(cause, target)
        return InternalError(f"{target} failed: {type(cause).__name__}: {cause}")
    if isinstance(exc, PlatformError):
        return exc
    if unreadable_answer(exc):
        # The deployment answered, but with an object of a class this process lacks (a
        # model server's own types, say): it is up, the answer is just not readable here.
        cause = exc.client_exc if isinstance(exc, ray_exceptions.RaySystemError) else exc
        return InternalError(
            f"{target} answered with an object this process cannot read "
            f"({type(cause).__name__}: {cause})"
        )
    if isinstance(exc, ray_exceptions.UnserializableException):
        # An exception raised in the deployment whose class this process lacks: Ray keeps
        # its text, whose last line is "ExceptionType: message".
        lines = str(exc).strip().splitlines()
        return InternalError(f"{target} failed: {lines[-1] if lines else type(exc).__name__}")
    if isinstance(exc, serve_exceptions.BackPressureError):
        return UnavailableError(f"{target} is overloaded: {exc}")
    if isinstance(exc, ray_exceptions.RayError | serve_exceptions.RayServeException):
        # Ray's messages run over many lines (actor ids, likely causes); the first says it.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return UnavailableError(f"{target} is unavailable: {type(exc).__name__}: {first_line}")
    return InternalError(f"calling {target} failed: {type(exc).__name__}: {exc}")


async def _parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events from the lines of a ``text/event-stream`` body."""
    data: list[str] = []
    event: str | None = None
    event_id: str | None = None
    model_time: str | None = None
    model_time_comment = f": {MODEL_TIME_HEADER} "
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(
                    data="\n".join(data), event=event, id=event_id, model_time_ms=model_time
                )
            data, event, event_id, model_time = [], None, None, None
            continue
        if line.startswith(":"):
            if line.startswith(model_time_comment):
                model_time = line.removeprefix(model_time_comment).strip()
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id":
            event_id = value
    if data:
        yield ServerSentEvent(
            data="\n".join(data), event=event, id=event_id, model_time_ms=model_time
        )
