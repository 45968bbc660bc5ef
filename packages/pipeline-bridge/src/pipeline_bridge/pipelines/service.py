"""``PipelineService``: pipeline runs started on ``ai.pipeline.trigger``, followed as events.

A trigger (``{pipeline, params, request_id?}``) is answered ``{run_id, state}`` once the
run is submitted. The run is then followed, and each change of its state is published
as a CloudEvents 1.0 JSON event on ``ai.pipeline.status.<run_id>``: ``submitted``,
``running``, then ``succeeded`` or ``failed`` (with the error), always in that order.

The ``submitted`` event follows the reply at once, so a watcher that wants every event
subscribes to ``ai.pipeline.status.>`` before it triggers (or to the run's subject as
soon as the reply comes, and reads the state from the reply).

Errors: an unknown pipeline is ``not_found``; params that do not fit the pipeline are
``invalid_request`` (``too_large`` past the size limit), and so is a file path outside the
folders the service may read (``allowed_folders``: ``DATA_DIR/inbox`` by default); more runs than
``max_concurrent_runs`` going at once is ``unavailable`` (try again later). A trigger
with a ``request_id`` already seen by this service gets the same run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nats.errors
from nats.aio.client import Client as NATS
from pydantic import BaseModel, ConfigDict, Field

from handler_base.errors import (
    InvalidRequestError,
    NotFoundError,
    PlatformError,
    UnavailableError,
)
from handler_base.messages import (
    PipelineRunAccepted,
    PipelineRunState,
    PipelineRunStatus,
    PipelineStatusEvent,
    PipelineTrigger,
)
from handler_base.messaging import RequestServer, flush, serve
from handler_base.settings import Settings
from pipeline_bridge.pipelines.registry import PIPELINES, PipelineDefinition
from pipeline_bridge.pipelines.runners import (
    KFPClientRunner,
    LocalRunner,
    PipelineRunner,
    RunStatus,
)

logger = logging.getLogger(__name__)

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
"""Content type of a structured-mode CloudEvent (the NATS protocol binding's header)."""

_NOT_A_SUBJECT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


class PipelineServiceConfig(BaseModel):
    """Settings of the pipeline service.

    Attributes:
        subject: Where triggers arrive.
        status_subject_prefix: Events go to ``<prefix>.<run_id>``.
        queue: Queue group of the trigger subscription (the subject when None).
        max_concurrent_runs: Runs going at once; a trigger past it is ``unavailable``.
        runner: ``local`` (kfp's local subprocess runner) or ``kfp`` (a KFP API server).
        local_root: Run folders of the local runner (``DATA_DIR/pipeline-runs`` when None).
        kfp_host: The KFP API server of the ``kfp`` runner.
        kfp_experiment: The experiment runs are filed under on the KFP server.
        poll_interval_s: How often a run's state is checked.
        stop_timeout_s: How long :meth:`PipelineService.stop` waits for runs to end
            before stopping them.
        event_source: The CloudEvents ``source`` of the status events.
        remembered_requests: Request ids (and finished runs) remembered for repeats.
        allowed_folders: The folders whose files a trigger may name (in the params a
            pipeline declares as files), and what is under them, symbolic links resolved;
            ``DATA_DIR/inbox`` when None, an empty list for none. A trigger comes from
            anyone who may publish on the subject, and the run reads with the service's
            rights: without this it could read any file the bridge can.
    """

    model_config = ConfigDict(extra="forbid")

    subject: str = "ai.pipeline.trigger"
    status_subject_prefix: str = "ai.pipeline.status"
    queue: str | None = None
    max_concurrent_runs: int = Field(default=2, ge=1)
    runner: Literal["local", "kfp"] = "local"
    local_root: Path | None = None
    kfp_host: str | None = None
    kfp_experiment: str = "ray-ai-platform"
    poll_interval_s: float = Field(default=1.0, gt=0)
    stop_timeout_s: float = Field(default=30.0, ge=0)
    event_source: str = "/ray-ai-platform/pipeline-bridge"
    remembered_requests: int = Field(default=1024, ge=1)
    allowed_folders: list[Path] | None = None

    def readable_folders(self, settings: Settings) -> list[Path]:
        """:attr:`allowed_folders`, or ``DATA_DIR/inbox``; resolved."""
        folders = [settings.inbox_dir] if self.allowed_folders is None else self.allowed_folders
        return [Path(os.path.realpath(folder)) for folder in folders]

    def make_runner(self, settings: Settings) -> PipelineRunner:
        """The runner this configuration names.

        Raises:
            ValueError: ``kfp`` without a ``kfp_host``.
        """
        if self.runner == "kfp":
            if not self.kfp_host:
                raise ValueError("the kfp runner needs kfp_host, the KFP API server's URL")
            return KFPClientRunner(
                self.kfp_host,
                experiment=self.kfp_experiment,
                poll_interval_s=self.poll_interval_s,
            )
        return LocalRunner(self.local_root, settings=settings)


@dataclass
class _Run:
    run_id: str
    pipeline: str
    state: PipelineRunState = PipelineRunState.SUBMITTED
    error: str | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class _Request:
    """A trigger with a request id: its run, once submitted."""

    fingerprint: str
    run_id: asyncio.Future[str]


class PipelineService:
    """Serves ``ai.pipeline.trigger`` and publishes the status of each run.

    Made once, started with :meth:`start` on a connected NATS client (the bridge actor
    hosts it), stopped with :meth:`stop`.

    Args:
        runner: Where runs happen; the configuration's (``local`` by default) when None.
            The service closes it on :meth:`stop`.
        settings: Where the services are (the knowledge API for ingestion runs).
        config: The service's settings.
        pipelines: The pipelines triggers may name.
    """

    def __init__(
        self,
        runner: PipelineRunner | None = None,
        *,
        settings: Settings | None = None,
        config: PipelineServiceConfig | None = None,
        pipelines: Mapping[str, PipelineDefinition] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.config = config or PipelineServiceConfig()
        self.runner = runner or self.config.make_runner(self.settings)
        self.pipelines = dict(PIPELINES if pipelines is None else pipelines)
        self._nc: NATS | None = None
        self._server: RequestServer[PipelineTrigger] | None = None
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._active = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, nc: NATS) -> None:
        """Serve triggers on ``nc`` (idempotent)."""
        if self._server is not None:
            return
        self._nc = nc
        self._server = await serve(
            nc,
            self.config.subject,
            self.trigger,
            PipelineTrigger,
            queue=self.config.queue,
            max_in_flight=max(8, self.config.max_concurrent_runs * 2),
        )

    async def stop(self) -> None:
        """Stop taking triggers, let runs end (up to ``stop_timeout_s``), then stop the rest.

        Runs the runner owns (local runs) that are still going are stopped and reported
        ``failed``; runs on a KFP server keep going there, unfollowed.
        """
        server, self._server = self._server, None
        if server is not None:
            await server.drain(timeout=self.config.stop_timeout_s)
        following = [r.task for r in self._runs.values() if r.task and not r.task.done()]
        if following:
            _, pending = await asyncio.wait(following, timeout=self.config.stop_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("stopped following %d pipeline runs still going", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        await self.runner.aclose()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await flush(self._nc)

    @property
    def active_runs(self) -> int:
        """Runs submitted and not yet ended."""
        return self._active

    def run_status(self, run_id: str) -> PipelineRunStatus:
        """What this service last saw of a run.

        Raises:
            NotFoundError: The service does not know (or no longer remembers) the run.
        """
        run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"no pipeline run {run_id!r} is known here")
        return PipelineRunStatus(
            run_id=run.run_id, pipeline=run.pipeline, state=run.state, error=run.error
        )

    async def wait(self, run_id: str) -> PipelineRunStatus:
        """The run's status once this service has seen it end (and published that)."""
        run = self._runs.get(run_id)
        if run is not None and run.task is not None:
            await asyncio.shield(run.task)
        return self.run_status(run_id)

    # --- triggers -------------------------------------------------------------------------

    async def trigger(self, request: PipelineTrigger) -> PipelineRunAccepted:
        """Start a run (the ``ai.pipeline.trigger`` handler).

        Raises:
            NotFoundError: No such pipeline.
            InvalidRequestError: The params do not fit the pipeline, or the request id
                was already used for another trigger.
            UnavailableError: Too many runs going, or the runner could not start one.
        """
        definition = self.pipelines.get(request.pipeline)
        if definition is None:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise NotFoundError(
                f"no pipeline is called {request.pipeline!r}; known pipelines: {known}"
            )
        try:
            arguments = definition.arguments(request.params, self.settings)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"params of {definition.name}: {exc.message}") from exc
        folders = self.config.readable_folders(self.settings)
        for param in definition.file_params:
            for path in arguments.get(param, []):
                check_readable(path, folders)
        if request.request_id is not None:
            repeat = await self._repeat(request, definition)
            if repeat is not None:
                return repeat
        if self._active >= self.config.max_concurrent_runs:
            raise UnavailableError(
                f"{self._active} pipeline runs are going, the most allowed at once; "
                "try again when one has ended"
            )
        self._active += 1
        pending: _Request | None = None
        if request.request_id is not None:
            pending = _Request(
                fingerprint=_fingerprint(request),
                run_id=asyncio.get_running_loop().create_future(),
            )
            self._remember(self._requests, request.request_id, pending)
        try:
            run_id = await self.runner.submit(definition, arguments)
        except BaseException as exc:
            self._active -= 1
            if pending is not None and request.request_id is not None:
                self._requests.pop(request.request_id, None)
                pending.run_id.set_exception(
                    exc if isinstance(exc, PlatformError) else UnavailableError(str(exc))
                )
                pending.run_id.exception()  # retrieved: waiters, if any, get it too
            if isinstance(exc, PlatformError | asyncio.CancelledError):
                raise
            raise UnavailableError(f"could not start {definition.name}: {exc}") from exc
        run = _Run(run_id=run_id, pipeline=definition.name)
        self._remember(self._runs, run_id, run)
        if pending is not None:
            pending.run_id.set_result(run_id)
        run.task = asyncio.create_task(self._follow(run), name=f"follow {run_id}")
        logger.info(
            "started %s run %s (request %s)", definition.name, run_id, request.request_id or "-"
        )
        return PipelineRunAccepted(run_id=run_id, state=run.state)

    async def _repeat(
        self, request: PipelineTrigger, definition: PipelineDefinition
    ) -> PipelineRunAccepted | None:
        """The run of an earlier trigger with the same request id, or None."""
        assert request.request_id is not None
        earlier = self._requests.get(request.request_id)
        if earlier is None:
            return None
        if earlier.fingerprint != _fingerprint(request):
            raise InvalidRequestError(
                f"request_id {request.request_id!r} was already used for another trigger"
            )
        run_id = await asyncio.shield(earlier.run_id)
        run = self._runs.get(run_id)
        state = run.state if run is not None else PipelineRunState.SUBMITTED
        logger.info("repeated trigger %s: same run %s", request.request_id, run_id)
        return PipelineRunAccepted(run_id=run_id, state=state)

    def _remember(self, store: OrderedDict[str, Any], key: str, value: Any) -> None:
        store[key] = value
        while len(store) > self.config.remembered_requests:
            oldest_key = next(iter(store))
            oldest = store[oldest_key]
            if isinstance(oldest, _Run) and not oldest.state.is_final:
                break  # never forget a run still going
            del store[oldest_key]

    # --- following a run ------------------------------------------------------------------

    async def _follow(self, run: _Run) -> None:
        """Publish the run's states as they change, until it ends."""
        try:
            await self._publish(run)
            while not run.state.is_final:
                status = await self._poll(run)
                if status is None:
                    continue
                if status.state.is_final and run.state is PipelineRunState.SUBMITTED:
                    await self._set_state(run, PipelineRunState.RUNNING)
                if status.state != run.state and status.state is not PipelineRunState.SUBMITTED:
                    await self._set_state(run, status.state, status.error)
        except Exception:
            logger.exception("following run %s failed", run.run_id)
            await self._set_state(
                run, PipelineRunState.FAILED, "internal error while following the run"
            )
        except asyncio.CancelledError:
            if self.runner.owns_runs and not run.state.is_final:
                with contextlib.suppress(PlatformError):
                    await self.runner.cancel(run.run_id)
                await self._set_state(
                    run,
                    PipelineRunState.FAILED,
                    "the pipeline service stopped before the run ended",
                )
            raise
        finally:
            self._active -= 1
        if run.error:
            logger.warning("%s run %s failed: %s", run.pipeline, run.run_id, run.error)
        else:
            logger.info("%s run %s %s", run.pipeline, run.run_id, run.state)

    async def _poll(self, run: _Run) -> RunStatus | None:
        """The run's next status; None when the runner could not tell this time."""
        try:
            return await self.runner.wait(run.run_id, timeout=self.config.poll_interval_s)
        except NotFoundError:
            return RunStatus(
                run_id=run.run_id,
                state=PipelineRunState.FAILED,
                error="the runner no longer knows this run",
            )
        except PlatformError as exc:
            logger.warning("could not get the state of run %s: %s", run.run_id, exc.message)
            await asyncio.sleep(self.config.poll_interval_s)
            return None

    async def _set_state(
        self, run: _Run, state: PipelineRunState, error: str | None = None
    ) -> None:
        run.state = state
        run.error = error if state is PipelineRunState.FAILED else None
        await self._publish(run)

    async def _publish(self, run: _Run) -> None:
        status = PipelineRunStatus(
            run_id=run.run_id, pipeline=run.pipeline, state=run.state, error=run.error
        )
        event = PipelineStatusEvent.for_status(status, source=self.config.event_source)
        subject = self.status_subject(run.run_id)
        if self._nc is None:
            return
        try:
            await self._nc.publish(
                subject,
                event.model_dump_json(exclude_none=True).encode("utf-8"),
                headers={"Content-Type": CLOUDEVENTS_CONTENT_TYPE},
            )
        except nats.errors.Error as exc:
            logger.warning("could not publish %s on %s: %s", event.type, subject, exc)

    def status_subject(self, run_id: str) -> str:
        """The subject of a run's events (the id made a valid subject token)."""
        return f"{self.config.status_subject_prefix}.{_NOT_A_SUBJECT_TOKEN.sub('_', run_id)}"


def check_readable(path: str, folders: list[Path]) -> None:
    """Refuse ``path`` unless it is absolute and, links resolved, under one of ``folders``.

    Raises:
        InvalidRequestError: It is relative, or outside them.
    """
    if not Path(path).is_absolute():
        raise InvalidRequestError(f"file paths must be absolute; {path!r} is not")
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(folder) for folder in folders):
        allowed = ", ".join(str(folder) for folder in folders) or "none"
        raise InvalidRequestError(
            f"{path} is outside the folders pipelines may read files from ({allowed}); "
            "put the file there, or send its text in documents"
        )


def _fingerprint(request: PipelineTrigger) -> str:
    """What makes two triggers with one request id the same trigger."""
    body = json.dumps({"pipeline": request.pipeline, "params": request.params}, sort_keys=True)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
