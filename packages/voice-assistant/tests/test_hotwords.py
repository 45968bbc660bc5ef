"""The voice app gives Whisper the request's collection vocabulary as ``hotwords``.

The whole stack runs: the session's model apps (``model_apps``), a chat app whose Milvus
Lite knowledge base holds a ferry timetable with an invented island, and the voice app.
The question "Which pier does the ferry to Kelvington Island leave from?" is spoken by
Piper; Whisper base hears "Kelvington" only when it is told the collection's words. Each
test stops the answer after its transcript (the LLM is not waited for).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from functools import cache

import httpx
import pytest

from handler_base.clients import ChatClient, KnowledgeClient, STTClient, TTSClient
from handler_base.messages import VoiceRequest, VoiceTranscriptEvent
from handler_base.settings import Settings
from handler_base.testing.platform import SharedApps
from handler_base.testing.ray_fixtures import LocalServe, free_port
from handler_base.testing.speech import normalize_words, speak
from voice_assistant import build_app
from voice_assistant.assistant import VoiceAssistant, VoiceConfig

pytestmark = pytest.mark.integration

COLLECTION = "ferries"
FERRY = {
    "id": "ferry",
    "text": (
        "Harwick Sound Ferries runs two routes from Harwick. Ferries to Kelvington Island "
        "leave from Pier 3 and arrive at the slipway in Port Ellery. The crossing to "
        "Kelvington Island takes 35 minutes. Ferries to Marren Point leave from Pier 5."
    ),
}
QUESTION = "Which pier does the ferry to Kelvington Island leave from?"


@cache
def question_wav() -> bytes:
    return speak(QUESTION)


def heard_the_name(transcript: str) -> bool:
    return "kelvington" in normalize_words(transcript)


@pytest.fixture(scope="module")
def stack(
    serve_instance: LocalServe, model_apps: SharedApps, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The chat and voice apps beside the models, the timetable ingested; the proxy's URL."""
    from ray import serve

    from chat_handler import build_app as build_chat

    milvus_uri = str(tmp_path_factory.mktemp("hotwords-data") / "milvus.db")
    asyncio.run(_store_without_vocabulary(milvus_uri))
    serve.run(build_chat({"milvus_uri": milvus_uri}), name="chat", route_prefix="/chat")
    serve.run(build_app(), name="voice", route_prefix="/voice")
    try:
        response = httpx.post(
            f"{serve_instance.http_url}/chat/knowledge/documents",
            json={"collection": COLLECTION, "documents": [FERRY]},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        yield serve_instance.http_url
    finally:
        for name in ("voice", "chat"):
            serve.delete(name)


OLD_COLLECTION = "before_hotwords"


async def _store_without_vocabulary(milvus_uri: str) -> None:
    """A collection written as by a version that kept no vocabulary (chunks only)."""
    from chat_handler.stores import KnowledgeRecord, MilvusStore

    settings = Settings(milvus_uri=milvus_uri)
    vector = [1.0] + [0.0] * (settings.embedding_dim - 1)
    async with MilvusStore(settings) as store:
        await store.upsert(
            OLD_COLLECTION,
            [KnowledgeRecord(text="The Vellum kettle whistles.", vector=vector, doc_id="k")],
        )
        assert await store.vocabulary(OLD_COLLECTION) is None


def transcript_over_http(stack: str, collection: str) -> str:
    """``POST /voice/stream``'s transcript event; the stream is closed after it."""
    with (
        httpx.Client(base_url=f"{stack}/voice", timeout=300) as http,
        http.stream(
            "POST",
            "/stream",
            content=question_wav(),
            params={"collection": collection},
            headers={"content-type": "audio/wav"},
        ) as response,
    ):
        assert response.status_code == 200, response.read().decode()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "transcript":
                return str(json.loads(line.removeprefix("data: "))["text"])
    raise AssertionError("no transcript event")


async def first_transcript(assistant: VoiceAssistant, collection: str) -> str:
    request = VoiceRequest(audio=question_wav(), collection=collection)
    async with contextlib.aclosing(assistant.stream(request)) as events:
        async for event in events:
            assert isinstance(event, VoiceTranscriptEvent), event
            return event.text
    raise AssertionError("no transcript event")


def assistant(config: VoiceConfig, knowledge: KnowledgeClient | None) -> VoiceAssistant:
    """The assistant a voice replica makes, its model clients by handle, in this process."""
    return VoiceAssistant(
        STTClient(mode="handle"),
        ChatClient(mode="handle"),
        TTSClient(mode="handle"),
        config,
        knowledge,
    )


def test_the_vocabulary_route(stack: str) -> None:
    base = f"{stack}/chat/knowledge/collections"
    response = httpx.get(f"{base}/{COLLECTION}/vocabulary", timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["collection"] == COLLECTION
    assert body["terms"][:3] == ["Kelvington Island", "Pier", "Harwick Sound Ferries"]
    assert "slipway" in body["terms"]

    missing = httpx.get(f"{base}/nothing_here/vocabulary", timeout=60)
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["code"] == "not_found"
    # A collection stored before vocabularies were kept gets one on first ask.
    old = httpx.get(f"{base}/{OLD_COLLECTION}/vocabulary", timeout=60)
    assert old.status_code == 200, old.text
    assert old.json()["terms"] == ["Vellum", "kettle", "whistles"]

    bad = httpx.get(f"{base}/has-dash/vocabulary", timeout=60)
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["code"] == "invalid_request"


def test_the_voice_app_hears_the_collections_names(stack: str) -> None:
    assert heard_the_name(transcript_over_http(stack, COLLECTION))
    # A collection that does not exist has no words: Whisper hears the name on its own,
    # which it does not.
    assert not heard_the_name(transcript_over_http(stack, "nothing_here"))


async def test_the_builder_argument_turns_hotwords_off(stack: str) -> None:
    off = assistant(VoiceConfig(hotwords=False), KnowledgeClient(mode="handle"))
    on = assistant(VoiceConfig(), KnowledgeClient(mode="handle"))
    try:
        assert off.hotwords is None
        assert not heard_the_name(await first_transcript(off, COLLECTION))

        assert on.hotwords is not None
        assert heard_the_name(await first_transcript(on, COLLECTION))
        # Kept for the next requests: asked once in the time to live.
        kept = on.hotwords._entries[COLLECTION]
        assert kept.hotwords is not None
        assert kept.hotwords.startswith("Kelvington Island Pier")
        assert heard_the_name(await first_transcript(on, COLLECTION))
        assert on.hotwords._entries[COLLECTION] is kept
    finally:
        await off.aclose()
        await on.aclose()


async def test_voice_works_without_the_knowledge_base(
    stack: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on this port: every vocabulary read fails at once.
    nowhere = KnowledgeClient(
        Settings(chat_url=f"http://127.0.0.1:{free_port()}/chat"), mode="http"
    )
    down = assistant(VoiceConfig(hotwords_ttl_s=0.01), nowhere)
    try:
        with caplog.at_level(logging.INFO, logger="voice_assistant.hotwords"):
            for collection in (COLLECTION, COLLECTION, "other"):
                heard = normalize_words(await first_transcript(down, collection))
                assert {"ferry", "island", "leave"} <= set(heard), heard
                assert "kelvington" not in heard
    finally:
        await down.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "no hotwords for Whisper" in warnings[0].getMessage()
