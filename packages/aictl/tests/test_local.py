"""The parts of `aictl` that need no running stack: state file, ports, files, sample."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aictl.cli import supported_files
from aictl.local import (
    LocalStack,
    StackState,
    port_answers,
    read_state,
    sample_documents,
    state_path,
    stop_running_stack,
)
from aictl.serve_api import DeploymentState, ReplicaState
from handler_base.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def write_state(settings: Settings, pid: int) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = StackState(
        pid=pid,
        serve_url="http://127.0.0.1:8000",
        dashboard_url="http://127.0.0.1:8265",
        nats_url="nats://127.0.0.1:4222",
        started_at=0.0,
    )
    path.write_text(state.model_dump_json())


def test_a_stale_state_file_means_nothing_runs_and_is_removed(settings: Settings) -> None:
    dead_pid = 2**22 + 17  # above the kernel's default pid_max: no such process
    write_state(settings, dead_pid)
    assert read_state(settings) is None
    assert not state_path(settings).exists()
    assert stop_running_stack(settings, say=lambda _: None) is False


def test_a_live_state_blocks_a_second_up(settings: Settings) -> None:
    write_state(settings, os.getpid())
    assert read_state(settings) is not None
    with pytest.raises(RuntimeError, match="already running"):
        LocalStack(settings).check_free()


def test_down_stops_the_process_the_state_names(settings: Settings) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_state(settings, sleeper.pid)
        assert stop_running_stack(settings, timeout_s=10, say=lambda _: None) is True
        assert sleeper.wait(timeout=10) != 0
        assert not state_path(settings).exists()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()


def test_a_taken_port_is_reported_before_anything_starts(settings: Settings) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_answers("127.0.0.1", port)
        with pytest.raises(RuntimeError, match=f"port {port} .* taken"):
            LocalStack(settings, serve_port=port).check_free()


def test_supported_files_walks_folders_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "docs" / "deep").mkdir(parents=True)
    for name in ("docs/a.md", "docs/deep/b.pdf", "docs/c.bin", "docs/deep/d.HTML", "e.txt"):
        (tmp_path / name).write_text("x")
    found = list(supported_files([tmp_path / "docs", tmp_path / "e.txt"]))
    assert found == [
        tmp_path / "docs" / "a.md",
        tmp_path / "docs" / "deep" / "b.pdf",
        tmp_path / "docs" / "deep" / "d.HTML",
        tmp_path / "e.txt",
    ]


def test_the_sample_knowledge_base_ships_with_titles() -> None:
    documents = sample_documents()
    assert len(documents) >= 3
    titles = {d["metadata"]["title"] for d in documents}
    assert "Aurora X7 drone" in titles
    assert all(d["id"].startswith("sample/") and d["text"] for d in documents)


def test_replicas_are_described_as_running_of_wanted() -> None:
    deployment = DeploymentState(
        name="ChatDeployment",
        status="UPDATING",
        target_num_replicas=2,
        replicas=[ReplicaState(state="RUNNING"), ReplicaState(state="STARTING")],
    )
    assert deployment.describe_replicas() == "1/2 running, 1 starting"
