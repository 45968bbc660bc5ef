"""Runners: where a pipeline run happens, behind one small interface.

* :class:`LocalRunner`, the embedded default: kfp's local ``SubprocessRunner`` really
  executes the steps on this machine, in the current Python environment. kfp's local
  mode keeps its configuration in a process-wide singleton, so each run gets a process
  of its own (``python -m pipeline_bridge.pipelines.local_run``): runs cannot disturb
  each other, the event loop never blocks, and a run can be stopped by ending its
  process group.
* :class:`KFPClientRunner`: ``kfp.Client`` against a Kubeflow Pipelines API server; the
  compiled pipeline is sent with each run, and the run's state is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import BaseModel, ConfigDict

from handler_base.errors import NotFoundError, UnavailableError
from handler_base.messages import PipelineRunState
from handler_base.settings import Settings
from pipeline_bridge.pipelines.registry import PipelineDefinition

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
"""Written by a local run's process when it ends: a :class:`RunStatus` without the id."""
ARGUMENTS_FILE = "arguments.json"
LOG_FILE = "run.log"


class RunStatus(BaseModel):
    """Where a run stands: its state and, once failed, why."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    state: PipelineRunState
    error: str | None = None


class PipelineRunner(Protocol):
    """Starts pipeline runs and tells their state.

    Attributes:
        owns_runs: True when the runs live in this process's care (they end when the
            runner closes); False when a server keeps running them.
    """

    owns_runs: bool

    async def submit(self, definition: PipelineDefinition, arguments: dict[str, Any]) -> str:
        """Start a run of ``definition`` with ``arguments``; return its id.

        Raises:
            UnavailableError: The run could not be started.
        """
        ...

    async def status(self, run_id: str) -> RunStatus:
        """The run's state now.

        Raises:
            NotFoundError: No such run.
            UnavailableError: The state could not be had.
        """
        ...

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:  # noqa: ASYNC109
        """The run's status once it has ended (or, after ``timeout`` seconds, as it is)."""
        ...

    async def cancel(self, run_id: str) -> None:
        """Stop the run (it then counts as failed)."""
        ...

    async def aclose(self) -> None:
        """Let go of the runner's resources; runs it owns are stopped."""
        ...


# --- local ------------------------------------------------------------------------------


@dataclass
class _LocalRun:
    process: asyncio.subprocess.Process
    run_dir: Path
    log: IO[bytes]
    cancelled: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reaper: asyncio.Task[None] | None = None


class LocalRunner:
    """Runs pipelines with kfp's local subprocess runner, one process per run.

    Each run has a folder under ``root`` (its arguments, the steps' outputs and
    ``run.log``, the steps' output), kept after the run for inspection.

    Args:
        root: Where run folders go; ``DATA_DIR/pipeline-runs`` when None.
        settings: Read for ``DATA_DIR`` when ``root`` is None.
        python: The interpreter of the run processes (it must have this package).
        stop_grace_s: How long a cancelled run may take to end after SIGTERM before
            it is killed.
    """

    owns_runs = True

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        settings: Settings | None = None,
        python: str = sys.executable,
        stop_grace_s: float = 5.0,
    ) -> None:
        if root is None:
            root = (settings or Settings()).data_dir / "pipeline-runs"
        self.root = Path(root)
        self.python = python
        self.stop_grace_s = stop_grace_s
        self._runs: dict[str, _LocalRun] = {}

    async def submit(self, definition: PipelineDefinition, arguments: dict[str, Any]) -> str:
        """Start the run's process; see :meth:`PipelineRunner.submit`."""
        run_id = f"local-{uuid.uuid4().hex}"
        run_dir = self.root / run_id
        try:
            run_dir.mkdir(parents=True)
            (run_dir / ARGUMENTS_FILE).write_text(json.dumps(arguments), encoding="utf-8")
            log = (run_dir / LOG_FILE).open("wb")
        except OSError as exc:
            raise UnavailableError(f"cannot prepare a run folder under {self.root}: {exc}") from exc
        try:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                "pipeline_bridge.pipelines.local_run",
                definition.name,
                str(run_dir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group, steps included
            )
        except OSError as exc:
            log.close()
            raise UnavailableError(f"cannot start a local pipeline run: {exc}") from exc
        run = _LocalRun(process=process, run_dir=run_dir, log=log)
        self._runs[run_id] = run
        run.reaper = asyncio.create_task(self._reap(run))
        logger.info("started local run %s of %s in %s", run_id, definition.name, run_dir)
        return run_id

    async def _reap(self, run: _LocalRun) -> None:
        try:
            await run.process.wait()
        finally:
            run.log.close()
            run.ended.set()

    async def status(self, run_id: str) -> RunStatus:
        """See :meth:`PipelineRunner.status`."""
        run = self._get(run_id)
        if not run.ended.is_set():
            return RunStatus(run_id=run_id, state=PipelineRunState.RUNNING)
        return self._final_status(run_id, run)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:  # noqa: ASYNC109
        """See :meth:`PipelineRunner.wait`."""
        run = self._get(run_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.ended.wait(), timeout)
        return await self.status(run_id)

    async def cancel(self, run_id: str) -> None:
        """End the run's process group: SIGTERM, then SIGKILL after the grace time."""
        run = self._get(run_id)
        if run.ended.is_set():
            return
        run.cancelled = True
        self._signal(run, signal.SIGTERM)
        try:
            await asyncio.wait_for(run.ended.wait(), self.stop_grace_s)
        except TimeoutError:
            self._signal(run, signal.SIGKILL)
            await run.ended.wait()

    async def aclose(self) -> None:
        """Stop every run still going."""
        running = [run_id for run_id, run in self._runs.items() if not run.ended.is_set()]
        if running:
            logger.warning("stopping %d local pipeline runs still going", len(running))
        await asyncio.gather(*(self.cancel(run_id) for run_id in running))

    def log_path(self, run_id: str) -> Path:
        """The run's log: what its steps printed."""
        return self._get(run_id).run_dir / LOG_FILE

    def _get(self, run_id: str) -> _LocalRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFoundError(f"no local pipeline run {run_id!r}") from None

    @staticmethod
    def _signal(run: _LocalRun, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.process.pid, signum)

    @staticmethod
    def _final_status(run_id: str, run: _LocalRun) -> RunStatus:
        if run.cancelled:
            return RunStatus(
                run_id=run_id, state=PipelineRunState.FAILED, error="the run was stopped"
            )
        try:
            result = json.loads((run.run_dir / RESULT_FILE).read_text(encoding="utf-8"))
            return RunStatus(run_id=run_id, **result)
        except (OSError, ValueError, TypeError):
            code = run.process.returncode
            return RunStatus(
                run_id=run_id,
                state=PipelineRunState.FAILED,
                error=f"the run's process ended with exit code {code} and no result "
                f"(see {run.run_dir / LOG_FILE})",
            )


# --- Kubeflow Pipelines API server ------------------------------------------------------

KFP_STATES: dict[str, PipelineRunState] = {
    "PENDING": PipelineRunState.SUBMITTED,
    "RUNTIME_STATE_UNSPECIFIED": PipelineRunState.SUBMITTED,
    "RUNNING": PipelineRunState.RUNNING,
    "PAUSED": PipelineRunState.RUNNING,
    "CANCELING": PipelineRunState.RUNNING,
    "SUCCEEDED": PipelineRunState.SUCCEEDED,
    "SKIPPED": PipelineRunState.SUCCEEDED,
    "FAILED": PipelineRunState.FAILED,
    "CANCELED": PipelineRunState.FAILED,
}
"""KFP v2 run states (``V2beta1RuntimeState``) in the platform's words."""


class KFPClientRunner:
    """Runs pipelines on a Kubeflow Pipelines API server through ``kfp.Client``.

    Each run is created from the pipeline compiled here (the same YAML as
    ``deploy/pipelines/``), in the experiment ``experiment``. ``kfp.Client`` is
    synchronous: its calls go to one worker thread, one at a time.

    Args:
        host: The KFP API server, e.g. ``http://ml-pipeline.kubeflow:8888``.
        experiment: The experiment the runs are filed under.
        poll_interval_s: How often :meth:`wait` asks for the state.
        client_options: More ``kfp.Client`` arguments (``existing_token``,
            ``namespace``, ``ssl_ca_cert``...).
    """

    owns_runs = False

    def __init__(
        self,
        host: str,
        *,
        experiment: str = "ray-ai-platform",
        poll_interval_s: float = 2.0,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.experiment = experiment
        self.poll_interval_s = poll_interval_s
        self._client_options = client_options or {}
        self._client: Any = None
        self._packages: dict[str, Path] = {}
        self._package_dir = tempfile.TemporaryDirectory(prefix="pipelines-")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfp-client")

    async def submit(self, definition: PipelineDefinition, arguments: dict[str, Any]) -> str:
        """Create the run on the server; see :meth:`PipelineRunner.submit`."""

        def create() -> str:
            package = self._packages.get(definition.name)
            if package is None:
                package = definition.compile(
                    Path(self._package_dir.name) / f"{definition.name}.yaml"
                )
                self._packages[definition.name] = package
            result = self._kfp().create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=f"{definition.name} {uuid.uuid4().hex[:8]}",
                experiment_name=self.experiment,
            )
            return str(result.run_id)

        run_id = str(await self._in_thread(create, f"create a run of {definition.name}"))
        logger.info("created run %s of %s on %s", run_id, definition.name, self.host)
        return run_id

    async def status(self, run_id: str) -> RunStatus:
        """See :meth:`PipelineRunner.status`."""
        run = await self._in_thread(lambda: self._kfp().get_run(run_id), f"get run {run_id}")
        state = KFP_STATES.get(str(run.state), PipelineRunState.RUNNING)
        error = None
        if state is PipelineRunState.FAILED:
            error = _run_error(run) or f"the run ended {str(run.state).lower()}"
        return RunStatus(run_id=run_id, state=state, error=error)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:  # noqa: ASYNC109
        """See :meth:`PipelineRunner.wait`."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            status = await self.status(run_id)
            if status.state.is_final or (deadline is not None and loop.time() >= deadline):
                return status
            await asyncio.sleep(self.poll_interval_s)

    async def cancel(self, run_id: str) -> None:
        """Ask the server to terminate the run."""
        await self._in_thread(lambda: self._kfp().terminate_run(run_id), f"terminate {run_id}")

    async def aclose(self) -> None:
        """Let go of the worker thread; the server keeps running the runs."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._package_dir.cleanup()

    def _kfp(self) -> Any:
        if self._client is None:
            import warnings

            import kfp

            with warnings.catch_warnings():
                # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later".
                warnings.simplefilter("ignore", FutureWarning)
                self._client = kfp.Client(host=self.host, **self._client_options)
        return self._client

    async def _in_thread(self, call: Any, what: str) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404:
                raise NotFoundError(f"the KFP server at {self.host} has no such run") from exc
            reason = getattr(exc, "reason", None) or exc
            raise UnavailableError(
                f"could not {what} on the KFP server at {self.host}: {reason}"
            ) from exc


def _run_error(run: Any) -> str | None:
    """The error a KFP run reports: its own, else the first failed task's."""
    error = getattr(run, "error", None)
    message = getattr(error, "message", None)
    if message:
        return str(message)
    details = getattr(run, "run_details", None)
    for task in getattr(details, "task_details", None) or []:
        task_error = getattr(getattr(task, "error", None), "message", None)
        if task_error:
            return f"step {task.display_name!r} failed: {task_error}"
    return None
