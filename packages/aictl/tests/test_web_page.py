"""The web page on the real stack, over plain HTTP and in headless Chromium.

The session's model apps (``model_apps``), the chat app (a Milvus Lite knowledge base
in a temporary folder, temperature 0), the web app at ``/`` and, when it exists, the
voice app run on the session's Ray cluster. A small corpus with a made-up fact is
ingested. The browser scripts under ``browser/`` drive Debian's ``chromium`` through
npm ``playwright-core`` (installed there by ``./dev install``) and print JSON that the
tests assert on. The fake microphone plays a WAV spoken by the test itself.

Access control is on: the chat, voice and web apps get ``API_KEYS`` in their replicas'
environment (through ``runtime_env.env_vars``, fit for a test; ``aictl up`` passes it
through the process environment, to the model apps too; the page calls only these). The
page and its files stay open; the page asks for the key when an API answers 401.

The chat app works on one HTTP request at a time with one more waiting, so that the busy
test can fill it; the other tests ask one question at a time.
"""

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ray.serve import Application

from aictl.web import APP_NAME, ROUTE_PREFIX, build_app
from chat_handler.deployment import build_app as build_chat_app
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe
from handler_base.testing.speech import convert_wav, read_wav, speak, to_wav, word_accuracy
from voice_assistant import build_app as build_voice_app

# Deploying the models and waiting for a slow shared CPU take longer than the default.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BROWSER_DIR = Path(__file__).parent / "browser"
PLAYWRIGHT_CORE = BROWSER_DIR / "node_modules" / "playwright-core"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")

COLLECTION = "webpage"
# The corpus of chat-handler's tests: the cpu model answers its question right at temperature
# 0 (a little change to these passages, such as a shorter QP-7 line, and it rambles instead).
FACT = "The ZX-41 flux capacitor ships in teal and costs 417 euros."
QUESTION = "How much does the ZX-41 flux capacitor cost?"
DOCUMENTS = [
    {
        "id": "zx41",
        "text": FACT + " Dr. Okafor designed its housing.",
        "metadata": {"title": "ZX-41 flux capacitor"},
    },
    {
        "id": "qp7",
        "text": "The QP-7 router blinks amber while its firmware updates. It weighs 2.3 kg.",
    },
    {"id": "hours", "text": "The support desk opens at 9 in the morning and closes at 5."},
]
ANSWER_TIMEOUT_MS = 240_000
API_KEY = "test-key-123"
API_KEYS = f"web-other-key-5b1,{API_KEY}"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
"""How long a browser script waits for an answer: the LLM shares two busy cores."""

# Around the spoken question in the fake microphone's file: silence before it covers the
# time the page takes to start recording, silence after it the time it takes to let go.
LEAD_SILENCE_S = 1.5
TRAIL_SILENCE_S = 2.5
FAKE_MIC_RATE = 48_000


def with_api_keys(app: Application) -> Application:
    """``app`` with ``API_KEYS`` in its ingress replicas' environment (where the guard reads it)."""
    deployment = app._bound_deployment
    actor_options = dict(deployment.ray_actor_options or {})
    runtime_env = dict(actor_options.get("runtime_env") or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), "API_KEYS": API_KEYS}
    actor_options["runtime_env"] = runtime_env
    return Application(deployment.options(ray_actor_options=actor_options))


@pytest.fixture(scope="module")
def stack_url(
    serve_instance: LocalServe, model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The Serve proxy's URL, with the chat, voice and web apps deployed."""
    from ray import serve

    deployed: list[str] = []
    try:
        milvus_uri = str(tmp_path_factory.mktemp("web-milvus") / "milvus.db")
        chat_args = {"milvus_uri": milvus_uri, "max_ongoing_requests": 1, "max_queued_requests": 1}
        serve.run(
            with_api_keys(build_chat_app(chat_args)),
            name="chat",
            route_prefix="/chat",
        )
        deployed.append("chat")
        serve.run(
            with_api_keys(build_voice_app({"language": "en"})), name="voice", route_prefix="/voice"
        )
        deployed.append("voice")
        serve.run(with_api_keys(build_app()), name=APP_NAME, route_prefix=ROUTE_PREFIX)
        deployed.append(APP_NAME)
        response = httpx.post(
            f"{serve_instance.http_url}/chat/knowledge/documents",
            json={"collection": COLLECTION, "documents": DOCUMENTS},
            headers=AUTH,
            timeout=120,
        )
        assert response.status_code == 200, response.text
        yield serve_instance.http_url
    finally:
        for name in reversed(deployed):
            serve.delete(name)


# --- plain HTTP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/", "text/html; charset=utf-8", b'<script type="module" src="static/app.js">'),
        ("/static/app.js", "text/javascript; charset=utf-8", b'const CHAT_URL = "/chat";'),
        ("/static/style.css", "text/css; charset=utf-8", b":root {"),
        (
            "/static/recorder-worklet.js",
            "text/javascript; charset=utf-8",
            b'registerProcessor("pcm-recorder"',
        ),
    ],
)
def test_the_page_and_its_files_are_served_with_their_types(
    stack_url: str, path: str, content_type: str, marker: bytes
) -> None:
    # No key: the page must load to ask for it.
    response = httpx.get(stack_url + path, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert marker in response.content
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/static/nothing.js", "/static/..%2Fdeployment.py", "/nope"])
def test_an_unknown_path_is_a_404_in_the_error_shape(stack_url: str, path: str) -> None:
    response = httpx.get(stack_url + path, headers=AUTH, timeout=30)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    # The page keeps serving.
    assert httpx.get(stack_url + "/", timeout=30).status_code == 200


def test_the_longer_prefixes_still_reach_their_own_apps(stack_url: str) -> None:
    # "/" is the web app's prefix; "/chat/..." must still go to the chat app.
    response = httpx.get(f"{stack_url}/chat/knowledge/collections", headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    names = {c["name"] for c in response.json()["collections"]}
    assert COLLECTION in names
    response = httpx.get(f"{stack_url}/llm/v1/models", headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["data"]


# --- in the browser -------------------------------------------------------------------


def run_browser_script(
    script: str, stack_url: str, *, answers: int, **options: Any
) -> dict[str, Any]:
    """Run ``browser/SCRIPT`` with node on the page of ``stack_url``; the JSON it printed.

    The script gets the page's URL, the collection, the API key and how long to wait for an
    answer (``timeoutMs``), besides ``options``; it may take ``answers`` such waits.
    """
    options = {
        "chromium": CHROMIUM,
        "url": stack_url + "/",
        "collection": COLLECTION,
        "apiKey": API_KEY,
        "timeoutMs": ANSWER_TIMEOUT_MS,
        **options,
    }
    if CHROMIUM is None or NODE is None:
        pytest.fail(
            "the browser test needs Debian's chromium and node: ./dev test installs them "
            "(as root or with passwordless sudo); else apt-get install chromium nodejs npm"
        )
    assert PLAYWRIGHT_CORE.is_dir(), (
        f"npm playwright-core is not installed in {BROWSER_DIR}: run ./dev test "
        f"(or: npm install --no-package-lock --prefix {BROWSER_DIR})"
    )
    done = subprocess.run(
        [NODE, str(BROWSER_DIR / script), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=answers * ANSWER_TIMEOUT_MS / 1000 + 120,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert "failure" not in result, json.dumps(result, indent=2)
    return result


def test_a_typed_question_streams_its_answer_and_lists_its_sources(stack_url: str) -> None:
    result = run_browser_script("chat.mjs", stack_url, answers=2, question=QUESTION)
    assert result["apiKeyAfterReload"] == API_KEY

    refused = result["refused"]
    assert refused["state"] == "error"
    assert refused["error"]["code"] == "invalid_request"
    assert "collection" in refused["error"]["message"]

    answered = result["answered"]
    assert answered["state"] == "done", answered
    assert answered["question"] == QUESTION
    assert "417" in answered["answer"]
    assert answered["error"] is None
    # The answer came in pieces, and the page showed it growing.
    assert int(answered["data"]["textEvents"]) > 1
    assert result["streamedTexts"] > 1
    first = answered["sources"][0]
    assert first["id"]
    assert first["title"] == "ZX-41 flux capacitor"
    assert "417 euros" in first["snippet"]
    assert math.isfinite(first["score"])
    assert result["sendEnabled"]
    # The key is sent with every request.
    assert result["authorizations"] == [f"Bearer {API_KEY}"] * 2
    assert result["httpErrors"] == [{"method": "POST", "path": "/chat", "status": 400}]
    assert result["problems"] == [], result["problems"]


def test_without_a_key_the_page_asks_for_one_then_sends_the_question_again(stack_url: str) -> None:
    result = run_browser_script(
        "key_prompt.mjs", stack_url, answers=1, question=QUESTION, wrongKey="not-the-key"
    )
    # No key: the prompt, focused, says so; the question waits in the log.
    asked = result["asked"]
    assert asked["visible"]
    assert asked["reason"] == "missing"
    assert asked["title"] == "This platform needs an API key"
    assert asked["focused"] == "key-prompt-input"
    assert asked["turnState"] == "needs-key"
    # A wrong key: refused, and asked again.
    refused = result["refused"]
    assert refused["visible"]
    assert refused["reason"] == "refused"
    assert refused["title"] == "The API key was refused"
    assert refused["focused"] == "key-prompt-input"
    # The right key: the same question is sent again, and its answer streams with a source.
    answered = result["answered"]
    assert answered["state"] == "done", answered
    assert answered["turns"] == 1
    assert answered["question"] == QUESTION
    assert "417" in answered["answer"]
    assert int(answered["data"]["textEvents"]) > 1
    assert answered["sources"][0]["title"] == "ZX-41 flux capacitor"
    assert answered["error"] is None
    assert not result["promptVisibleAfter"]
    assert result["storedKey"] == API_KEY
    assert result["authorizations"] == [None, "Bearer not-the-key", f"Bearer {API_KEY}"]
    assert API_KEY not in result["pageUrl"]
    assert result["httpErrors"] == [{"method": "POST", "path": "/chat", "status": 401}] * 2
    assert result["problems"] == [], result["problems"]


def test_when_the_platform_is_busy_the_page_says_so_and_asks_again(stack_url: str) -> None:
    result = run_browser_script(
        "busy.mjs",
        stack_url,
        answers=2,  # the page's, and the other callers' last ones before it
        question=QUESTION,
        holdQuestion="What does the QP-7 router do while its firmware updates?",
    )
    # Refused while the other callers filled the handler: the turn says it asks again.
    busy = result["busy"]
    assert busy["state"] == "busy"
    assert busy["answer"] == "The platform is busy; asking again in 1 s…"
    assert busy["error"] is None
    # Asked again until there was room: the answer streamed in, with no error shown.
    answered = result["answered"]
    assert answered["state"] == "done", answered
    assert "417" in answered["answer"]
    assert answered["sources"][0]["title"] == "ZX-41 flux capacitor"
    assert answered["error"] is None
    retries = int(answered["data"]["busyRetries"])
    assert retries >= 1
    # Every refusal the page got is one of its retries.
    assert result["httpErrors"] == [{"method": "POST", "path": "/chat", "status": 503}] * retries
    assert set(result["fillerStatuses"]) <= {200, 503}
    assert 200 in result["fillerStatuses"]
    assert result["problems"] == [], result["problems"]


@pytest.fixture(scope="module")
def fake_microphone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The spoken question as the fake microphone's WAV, and the seconds to hold Talk."""
    spoken = convert_wav(speak(QUESTION), FAKE_MIC_RATE)
    samples, _ = read_wav(spoken)

    def silence(seconds: float) -> np.ndarray[Any, np.dtype[np.float32]]:
        return np.zeros((round(seconds * FAKE_MIC_RATE), 1), dtype=np.float32)

    padded = np.concatenate([silence(LEAD_SILENCE_S), samples, silence(TRAIL_SILENCE_S)])
    path = tmp_path_factory.mktemp("fake-mic") / "question.wav"
    path.write_bytes(to_wav(padded, FAKE_MIC_RATE))
    # Recording starts within the leading silence: hold through it, the question and a
    # little more, which stays within the trailing silence.
    return path, LEAD_SILENCE_S + len(samples) / FAKE_MIC_RATE + 0.5


def test_push_to_talk_shows_the_transcript_and_plays_the_answer(
    stack_url: str, fake_microphone: tuple[Path, float]
) -> None:
    wav, hold_s = fake_microphone
    result = run_browser_script(
        "voice.mjs", stack_url, answers=2, fakeAudio=str(wav), holdMs=round(hold_s * 1000)
    )
    assert result["pressedWhileRecording"] == "true"
    assert result["recordedMs"] >= hold_s * 1000
    [posted] = result["posted"]
    assert posted["url"] == "/voice/stream"
    assert posted["contentType"].startswith("multipart/form-data")

    answered = result["answered"]
    assert answered["state"] == "done", answered
    assert word_accuracy(QUESTION, answered["question"]) >= 0.6, answered["question"]
    assert answered["answer"]
    assert answered["sources"]
    data = answered["data"]
    # Every sentence's audio arrived, was decoded and played, in the order it was sent.
    received = int(data["audioReceived"])
    assert received >= 1
    assert int(data["audioPlayed"]) == received
    assert data["audioOrder"] == ",".join(str(i) for i in range(received))
    assert float(data["audioSeconds"]) > 0.5
    assert result["talkState"] == "idle"
    assert result["httpErrors"] == []
    assert result["problems"] == [], result["problems"]
