"""The ``document-ingestion`` pipeline: its params, its compiled YAML, and local runs.

The local runs are real: kfp's local subprocess runner executes the steps in this
environment. Runs that need the knowledge API to answer are in
``test_pipeline_ingestion.py`` (with the real chat app on Ray); these ones fail or stall
before any document is stored.
"""

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from handler_base.errors import InvalidRequestError, NotFoundError
from handler_base.messages import PipelineRunState
from handler_base.settings import Settings
from pipeline_bridge.pipelines import PIPELINES, LocalRunner, get_pipeline
from pipeline_bridge.pipelines.local_run import failure_message

REPO = Path(__file__).resolve().parents[4]
COMMITTED = REPO / "deploy" / "pipelines" / "document-ingestion.yaml"


def test_the_committed_compiled_pipeline_is_current(tmp_path: Path) -> None:
    """If this fails: ``python -m pipeline_bridge.pipelines compile`` and commit the file."""
    fresh = get_pipeline("document-ingestion").compile(tmp_path / "fresh.yaml")
    committed = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    assert yaml.safe_load(fresh.read_text(encoding="utf-8")) == committed
    assert committed["pipelineInfo"]["name"] == "document-ingestion"
    steps = committed["root"]["dag"]["tasks"]
    assert set(steps) == {"load-and-chunk", "embed-and-upsert"}
    assert steps["embed-and-upsert"]["dependentTasks"] == ["load-and-chunk"]


def test_the_compile_command_writes_every_pipeline(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline_bridge.pipelines", "compile", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in PIPELINES:
        assert (
            yaml.safe_load((tmp_path / f"{name}.yaml").read_text())["pipelineInfo"]["name"] == name
        )


def test_arguments_are_the_checked_params_and_the_knowledge_api_url() -> None:
    definition = get_pipeline("document-ingestion")
    settings = Settings(chat_url="http://127.0.0.1:8123/chat")
    arguments = definition.arguments(
        {"collection": "manuals", "documents": [{"text": "Hello."}]}, settings
    )
    assert arguments == {
        "collection": "manuals",
        "paths": [],
        "documents": [{"text": "Hello.", "metadata": {}}],
        "max_batch_chunks": 64,
        "chat_url": "http://127.0.0.1:8123/chat",
    }


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "at least one document"),
        ({"paths": ["a.md"], "chat_url": "http://elsewhere"}, "chat_url"),
        ({"paths": ["a.md"], "collection": "no spaces please"}, "collection"),
        ({"documents": [{"text": ""}]}, "text"),
        ({"paths": "a.md"}, "paths"),
    ],
)
def test_bad_params_are_invalid_requests(params: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        get_pipeline("document-ingestion").arguments(params, Settings())


def test_an_unknown_pipeline_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="document-ingestion"):
        get_pipeline("no-such-pipeline")


def test_the_failure_message_names_the_step_and_the_cause() -> None:
    error = RuntimeError(
        "Pipeline \x1b[95m'document-ingestion'\x1b[0m finished with status FAILURE. "
        "Inner task failed: \x1b[96m'embed-and-upsert'\x1b[0m."
    )
    lines = [
        "Traceback (most recent call last):",
        '  File "x.py", line 3, in f',
        "    RuntimeError: storing batch 1 of 1 failed (unavailable): cannot reach",
        "",
    ]
    assert failure_message(error, lines) == (
        "step 'embed-and-upsert' failed: storing batch 1 of 1 failed (unavailable): cannot reach"
    )
    assert failure_message(ValueError("boom"), []) == "boom"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/chat"


async def test_a_local_run_of_a_missing_file_fails_with_its_error(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path / "runs")
    definition = get_pipeline("document-ingestion")
    missing = tmp_path / "nowhere" / "missing.md"
    run_id = await runner.submit(
        definition, definition.arguments({"paths": [str(missing)]}, Settings())
    )
    assert (await runner.status(run_id)).state in (
        PipelineRunState.RUNNING,
        PipelineRunState.FAILED,
    )
    status = await runner.wait(run_id, timeout=240)
    assert status.state is PipelineRunState.FAILED
    assert status.error is not None
    assert "load-and-chunk" in status.error
    assert str(missing) in status.error
    assert "No such file" in status.error
    assert "load-and-chunk" in runner.log_path(run_id).read_text()
    await runner.aclose()


async def test_a_local_run_that_cannot_reach_the_knowledge_api_fails_with_its_error(
    tmp_path: Path,
) -> None:
    runner = LocalRunner(tmp_path / "runs")
    definition = get_pipeline("document-ingestion")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{free.getsockname()[1]}/chat"
    document = tmp_path / "note.md"
    document.write_text("# Note\n\nThe kettle whistles at dawn.\n", encoding="utf-8")
    run_id = await runner.submit(
        definition,
        definition.arguments({"paths": [str(document)]}, Settings(chat_url=closed_url)),
    )
    status = await runner.wait(run_id, timeout=240)
    assert status.state is PipelineRunState.FAILED
    assert status.error is not None
    assert status.error.startswith("step 'embed-and-upsert' failed:")
    assert "unavailable" in status.error
    assert closed_url in status.error


async def test_a_cancelled_local_run_ends_as_failed(tmp_path: Path, silent_server: str) -> None:
    runner = LocalRunner(tmp_path / "runs", stop_grace_s=2.0)
    definition = get_pipeline("document-ingestion")
    run_id = await runner.submit(
        definition,
        definition.arguments({"documents": [{"text": "Tea."}]}, Settings(chat_url=silent_server)),
    )
    # The embed step waits on a server that never answers: the run stays running.
    status = await runner.wait(run_id, timeout=5)
    assert status.state is PipelineRunState.RUNNING
    await runner.cancel(run_id)
    status = await runner.status(run_id)
    assert status.state is PipelineRunState.FAILED
    assert status.error == "the run was stopped"
    await asyncio.wait_for(runner.aclose(), 30)
