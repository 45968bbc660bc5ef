"""`aictl up` as a user runs it: the whole stack, the printed examples pasted, `aictl down`.

The stack runs in its own process (its own Ray cluster, NATS server and data folder, on
free ports), so this also proves that nothing is left behind once it stops. It runs with
access control on (two keys in ``API_KEYS``, one of them exported as ``SERVICE_API_KEY``),
as a user with keys runs it: every check below goes through the key path.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from aictl.serve_api import ServeApi, replica_actors
from handler_base.testing.ray_fixtures import free_port
from handler_base.testing.speech import speak

pytestmark = pytest.mark.integration

AICTL = str(Path(sys.executable).with_name("aictl"))
READY_LINE = "The platform is up."
STARTUP_TIMEOUT_S = 1200
API_KEYS = ("up-key-one-5d2e81", "up-key-two-8c4f17")


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    env: dict[str, str]
    dashboard_url: str
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def serve_url(self) -> str:
        return self.env["CHAT_URL"].rsplit("/chat", 1)[0]

    def aictl(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AICTL, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout
        )

    def example(self, marker: str) -> str:
        """The command printed on the line after the comment that contains ``marker``."""
        for index, line in enumerate(self.lines):
            if line.strip().startswith("#") and marker in line:
                return self.lines[index + 1].strip()
        raise AssertionError(f"no example {marker!r} in:\n{self.output}")


def processes_in_group(pgid: int) -> list[str]:
    found = subprocess.run(
        ["ps", "-eo", "pgid=,stat=,cmd="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line
        for line in found.splitlines()
        if line.split()[0] == str(pgid) and not line.split()[1].startswith("Z")
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    data_dir = tmp_path_factory.mktemp("aictl-data")
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "COLUMNS": "400",
        "API_KEYS": ",".join(API_KEYS),
        "SERVICE_API_KEY": API_KEYS[1],
    }
    serve_port, dashboard_port = free_port(), free_port()
    env["CHAT_URL"] = f"http://127.0.0.1:{serve_port}/chat"
    process = subprocess.Popen(
        [AICTL, "up", "--serve-port", str(serve_port), "--dashboard-port", str(dashboard_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = RunningStack(process, env, f"http://127.0.0.1:{dashboard_port}")
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line.rstrip("\n"))
            if "Press Ctrl-C" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready.wait(2) and process.poll() is None and time.monotonic() < deadline:
            pass
        assert ready.is_set(), f"aictl up did not come up:\n{running.output}"
        yield running
    finally:
        # Only when a test failed half-way: the stack's own group, by its id.
        if processes_in_group(process.pid):
            os.killpg(process.pid, signal.SIGKILL)


def test_up_reports_progress_and_prints_where_things_are(stack: RunningStack) -> None:
    out = stack.output
    assert READY_LINE in out
    for step in ("Starting the bundled NATS server", "Starting Ray", "Deploying 9 applications"):
        assert step in out
    assert "Sample knowledge base ingested" in out
    assert re.search(r"Web page: +http://127\.0\.0\.1:\d+/ \(it asks for the API key\)", out)
    assert "Access control is on: HTTP requests need one of the 2 keys in API_KEYS" in out
    assert "SERVICE_API_KEY is not" not in out  # the exported key is one of them


def test_printed_curl_example_answers_from_the_sample(stack: RunningStack) -> None:
    command = stack.example("HTTP")
    assert command.startswith("curl ")
    assert '-H "Authorization: Bearer $SERVICE_API_KEY"' in command
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=300, env=stack.env
    )
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout
    assert "aurora-x7.md" in result.stdout


def test_printed_openai_example_answers(stack: RunningStack) -> None:
    command = stack.example("OpenAI")
    assert "api_key=os.environ['SERVICE_API_KEY']" in command
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=300, env=stack.env
    )
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout


def test_printed_nats_example_answers_through_the_bridge(stack: RunningStack) -> None:
    command = stack.example("NATS")
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=300, env=stack.env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "42" in result.stdout
    assert "Aurora X7 drone" in result.stdout  # the source's title


def test_status_shows_apps_nats_and_collections(stack: RunningStack) -> None:
    result = stack.aictl("status")
    assert result.returncode == 0, result.stderr
    assert "9 running" in result.stdout  # 5 models, chat, voice, bridge, web
    assert "connected" in result.stdout
    assert re.search(r"default\s*│\s*\d+", result.stdout)


def test_a_request_without_a_valid_key_is_refused_in_the_error_shape(stack: RunningStack) -> None:
    question = {"query": "How long does the Aurora X7 drone fly on one charge?"}
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"X-API-Key": "not-a-key"}):
        response = httpx.post(f"{stack.serve_url}/chat", json=question, headers=headers, timeout=60)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Either key, in either header; health and the web page need none.
    for headers in ({"Authorization": f"Bearer {API_KEYS[0]}"}, {"X-API-Key": API_KEYS[1]}):
        response = httpx.get(
            f"{stack.serve_url}/chat/knowledge/collections", headers=headers, timeout=60
        )
        assert response.status_code == 200, (headers, response.text)
    assert httpx.get(f"{stack.serve_url}/chat/-/healthz", timeout=60).status_code == 200
    page = httpx.get(f"{stack.serve_url}/", timeout=60)
    assert page.status_code == 200
    assert "key-prompt" in page.text


def test_aictl_without_the_key_says_what_to_set(stack: RunningStack, tmp_path: Path) -> None:
    without = {k: v for k, v in stack.env.items() if k != "SERVICE_API_KEY"}
    result = stack.aictl("chat", "How long does the drone fly?", env=without)
    assert result.returncode == 1
    assert "the platform needs an API key: set SERVICE_API_KEY" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr

    notes = tmp_path / "refused.md"
    notes.write_text("# Refused\n\nThis file never reaches the knowledge base.\n")
    result = stack.aictl("ingest", str(notes), env={**without, "SERVICE_API_KEY": "not-a-key"})
    assert result.returncode == 1
    assert "the API key was refused" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "not-a-key" not in result.stdout + result.stderr


def test_the_keys_are_nowhere_in_output_state_or_serve_config(stack: RunningStack) -> None:
    state_text = (Path(stack.env["DATA_DIR"]) / "aictl" / "stack.json").read_text()
    dashboard_url = json.loads(state_text)["dashboard_url"]
    serve_config = httpx.get(f"{dashboard_url}/api/serve/applications/", timeout=60)
    assert serve_config.status_code == 200
    assert "chat" in serve_config.json()["applications"]
    status = stack.aictl("status")
    assert status.returncode == 0, status.stderr
    for where, text in {
        "aictl up's output": stack.output,
        "the state file": state_text,
        "the Serve config": serve_config.text,
        "aictl status": status.stdout + status.stderr,
    }.items():
        for key in API_KEYS:
            assert key not in text, f"an API key is in {where}"


def test_ingest_by_http_and_by_pipeline_then_chat_and_voice(
    stack: RunningStack, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Lab notes\n\nThe Zephyr-9 kettle boils water in 71 seconds.\n")
    result = stack.aictl("ingest", str(notes), "--collection", "lab")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ingested 1 of 1 files into 'lab'" in result.stdout

    result = stack.aictl(
        "chat", "--collection", "lab", "--stream", "How fast does the Zephyr-9 boil water?"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "71" in result.stdout
    assert "Lab notes" in result.stdout

    report = tmp_path / "report.md"
    report.write_text(
        "# Field report\n\nThe Heron-5 buoy reports the sea temperature every 12 minutes.\n"
    )
    result = stack.aictl("ingest", "--via", "pipeline", "--collection", "lab", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pipeline run" in result.stdout
    result = stack.aictl("chat", "--collection", "lab", "How often does the Heron-5 buoy report?")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12" in result.stdout
    assert "Field report" in result.stdout

    question = tmp_path / "question.wav"
    question.write_bytes(speak("How long does the Aurora X7 drone fly on one charge?"))
    answer = tmp_path / "answer.wav"
    result = stack.aictl("voice", str(question), "-o", str(answer))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Aurora" in result.stdout
    assert answer.read_bytes()[:4] == b"RIFF"


def test_bad_input_gets_a_clear_error(stack: RunningStack, tmp_path: Path) -> None:
    result = stack.aictl("ingest", str(tmp_path / "missing.md"))
    assert result.returncode == 1
    assert "no such file" in result.stderr
    result = stack.aictl("chat", "")
    assert result.returncode == 1
    assert "error" in result.stderr.lower()


def test_a_new_prompt_restarts_the_chat_app_and_no_model(
    stack: RunningStack, tmp_path: Path
) -> None:
    api = ServeApi(stack.dashboard_url)
    before = replica_actors(api.applications())
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Answer in one short sentence, from these passages only:\n{passages}\n")
    nothing_found = "The knowledge base has nothing on that yet."
    result = stack.aictl(
        "configure",
        "chat",
        "--set",
        f"rag.prompt_template=@{prompt}",
        "--set",
        f"rag.no_sources_answer={nothing_found}",
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chat restarted with the new arguments; 8 other applications kept" in result.stdout

    after = replica_actors(api.applications())
    assert after["chat"]
    assert not after["chat"] & before["chat"]
    others = set(before) - {"chat"}
    assert {n: after[n] for n in others} == {n: before[n] for n in others}
    (chat,) = [a for a in api.running_config()["applications"] if a["name"] == "chat"]
    assert chat["args"]["rag"]["prompt_template"] == prompt.read_text()

    # The new replica answers with the new settings, from the knowledge base it kept.
    result = stack.aictl("chat", "--collection", "nothing_here", "What is the ZX-41?")
    assert result.returncode == 0, result.stdout + result.stderr
    assert nothing_found in result.stdout
    result = stack.aictl("chat", "--collection", "lab", "How fast does the Zephyr-9 boil water?")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lab notes" in result.stdout

    # Arguments the chat builder refuses change nothing.
    result = stack.aictl("configure", "chat", "--set", "rag.prompt_template=No passages here.")
    assert result.returncode == 1
    assert "chat refuses these arguments" in result.stderr
    assert replica_actors(api.applications()) == after
    api.close()


def table_row(output: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|]", line) if cell.strip()]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{output}")


def test_eval_ingests_the_reference_once_then_prints_the_quality_table(
    stack: RunningStack,
) -> None:
    result = stack.aictl("eval", "--limit", "2", timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Adding the Python language reference to 'eval_python_reference'" in out
    # Retrieval: each set searched as dense alone and as the chat's pipeline, with the
    # pipeline's paired interval against dense.
    for name in (
        "Python reference, as users ask",
        "Python reference, in its own terms",
        "answer set",
        "sample",
    ):
        _, *scores, interval, n = table_row(out, name)
        assert all(0.0 <= float(score) <= 1.0 for score in scores), out
        assert interval.split()[-1] in ("tie", "better", "worse"), out
        assert n == "2", out
    # Three documents and questions named by their product: dense search finds each one.
    assert table_row(out, "sample")[1:3] == ["1.000", "1.000"], out
    assert table_row(out, "sample, chat answers (sources)")[3].endswith("%")
    # The answer set: 2 questions of each kind, asked through /chat and judged.
    for measure in ("facts right", "follow-ups right", "refusals right (cannot be answered)"):
        assert re.fullmatch(r"[012]/2 \(\d+%\)", table_row(out, measure)[1]), out

    status = stack.aictl("status")
    assert re.search(r"eval_python_reference\s*│?\s*\d+", status.stdout), status.stdout
    again = stack.aictl("eval", "--limit", "1", "--no-answers")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "The Python language reference is in 'eval_python_reference'" in again.stdout
    assert "Adding the Python" not in again.stdout
    assert table_row(again.stdout, "Python reference, as users ask")[-1] == "1"
    for skipped in ("sample, chat answers (sources)", "facts right"):
        with pytest.raises(AssertionError):
            table_row(again.stdout, skipped)


def test_a_second_up_is_refused(stack: RunningStack) -> None:
    result = stack.aictl("up", timeout=60)
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_down_stops_everything_it_started(stack: RunningStack) -> None:
    result = stack.aictl("down", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stack.process.wait(timeout=60) == 0
    assert "Stopped." in stack.output
    deadline = time.monotonic() + 30
    while processes_in_group(stack.process.pid) and time.monotonic() < deadline:
        time.sleep(1)
    assert processes_in_group(stack.process.pid) == []
    result = stack.aictl("status")
    assert "No local stack is running" in result.stdout
