"""Voice latency: time to first audio and voice to voice, streaming against whole.

Deploys the whole cpu stack on a local Ray (embeddings, reranker, LLM, Whisper, TTS, the
chat handler with Milvus Lite in a temporary folder, and the voice handler), ingests a
small corpus, speaks two-part questions with Piper (so that answers run to more than one
sentence), and asks each one four ways, interleaved:
``POST /voice`` (whole) and ``POST /voice/stream`` (streaming) over HTTP, and the handle
methods ``voice`` / ``voice_stream`` through :class:`VoiceClient` in handle mode.

- *first audio*: from sending the question to receiving the first sentence's audio (the
  whole answer's audio for the whole route, which has only one).
- *voice to voice*: from sending the question to having all of the answer's audio.
- *stages*: the handler's ``timings_ms`` (stt, rag = embed + search + rerank, generate,
  tts summed over the sentences). TTS runs while the LLM generates, so the stages add up
  to more than the total; ``overlap`` is what that saves against running them in turn.

Run: ``.venv/bin/python bench/voice.py -n 4``
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from _common import local_serve, markdown_table, percentile, print_result

STAGES = ("stt", "rag", "generate", "tts")
PRODUCTS = [
    ("ZX-41", "flux capacitor", "teal", 417),
    ("QB-7", "harmonic resonator", "amber", 129),
    ("LM-88", "plasma coupler", "violet", 2310),
    ("TR-3", "quantum gasket", "ochre", 58),
]
QUESTION = "How much does the {code} cost, and how often is it serviced?"
WAYS = ("http whole", "http stream", "handle whole", "handle stream")


def corpus() -> list[dict[str, Any]]:
    return [
        {
            "id": code.lower(),
            "text": (
                f"The {code} {name} is a product of Acme Orbital. It ships in {colour} and "
                f"costs {price} euros. The {code} is serviced every 90 days."
            ),
            "metadata": {"title": f"{code} {name}"},
        }
        for code, name, colour, price in PRODUCTS
    ]


Measure = dict[str, Any]


async def http_whole(client: httpx.AsyncClient, wav: bytes) -> Measure:
    start = time.perf_counter()
    response = await client.post(
        "/voice", content=wav, params={"collection": "bench"}, headers={"content-type": "audio/wav"}
    )
    response.raise_for_status()
    end = time.perf_counter() - start
    body = response.json()
    return {"first_audio": end, "voice_to_voice": end, "timings": body["timings_ms"]}


async def http_stream(client: httpx.AsyncClient, wav: bytes) -> Measure:
    start = time.perf_counter()
    first: float | None = None
    done: dict[str, Any] = {}
    async with client.stream(
        "POST",
        "/voice/stream",
        content=wav,
        params={"collection": "bench"},
        headers={"content-type": "audio/wav"},
    ) as response:
        response.raise_for_status()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                if event == "audio" and first is None:
                    first = time.perf_counter() - start
                elif event == "done":
                    done = json.loads(line.removeprefix("data: "))
                elif event == "error":
                    raise RuntimeError(line)
    end = time.perf_counter() - start
    return {
        "first_audio": first or end,
        "voice_to_voice": end,
        "timings": done["timings_ms"],
        "sentences": done["sentences"],
    }


async def handle_whole(voice: Any, wav: bytes) -> Measure:
    from handler_base.messages import VoiceRequest

    start = time.perf_counter()
    answer = await voice.voice(VoiceRequest(audio=wav, collection="bench"))
    end = time.perf_counter() - start
    return {
        "first_audio": end,
        "voice_to_voice": end,
        "timings": answer.timings_ms.model_dump(),
    }


async def handle_stream(voice: Any, wav: bytes) -> Measure:
    from handler_base.messages import VoiceAudioEvent, VoiceDoneEvent, VoiceRequest

    start = time.perf_counter()
    first: float | None = None
    timings: dict[str, float] = {}
    sentences = 0
    async for event in voice.voice_stream(VoiceRequest(audio=wav, collection="bench")):
        if isinstance(event, VoiceAudioEvent) and first is None:
            first = time.perf_counter() - start
        elif isinstance(event, VoiceDoneEvent):
            timings = event.timings_ms.model_dump()
            sentences = event.sentences
    end = time.perf_counter() - start
    return {
        "first_audio": first or end,
        "voice_to_voice": end,
        "timings": timings,
        "sentences": sentences,
    }


def summary_of(measures: list[Measure]) -> dict[str, Any]:
    def stat(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 1), "p99": round(percentile(values, 99), 1)}

    out: dict[str, Any] = {
        "first_audio_ms": stat([m["first_audio"] * 1000 for m in measures]),
        "voice_to_voice_ms": stat([m["voice_to_voice"] * 1000 for m in measures]),
    }
    totals = [m["timings"]["total"] for m in measures]
    for stage in STAGES:
        values = [m["timings"][stage] for m in measures]
        out[stage] = {
            **stat(values),
            "share_of_total": round(statistics.median(values) / statistics.median(totals), 3),
        }
    out["total_ms"] = stat(totals)
    if all("sentences" in m for m in measures):
        out["sentences_mean"] = round(statistics.fmean(m["sentences"] for m in measures), 2)
    stage_sums = [sum(m["timings"][s] for s in STAGES) for m in measures]
    out["overlap_ms"] = stat([s - t for s, t in zip(stage_sums, totals, strict=True)])
    return out


async def run(base_url: str, questions: list[bytes]) -> dict[str, Any]:
    from handler_base.clients import VoiceClient

    measures: dict[str, list[Measure]] = {way: [] for way in WAYS}
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=600) as client,
        VoiceClient(mode="handle") as voice,
    ):
        ways: dict[str, Callable[[bytes], Awaitable[Measure]]] = {
            "http whole": lambda wav: http_whole(client, wav),
            "http stream": lambda wav: http_stream(client, wav),
            "handle whole": lambda wav: handle_whole(voice, wav),
            "handle stream": lambda wav: handle_stream(voice, wav),
        }
        for way in WAYS:  # warm up every path once
            await ways[way](questions[0])
        for wav in questions:
            for way in WAYS:  # interleaved, so a slow moment of the machine hits all ways
                measures[way].append(await ways[way](wav))
    return {way: summary_of(found) for way, found in measures.items()}


def table(result: dict[str, Any]) -> str:
    rows = []
    for way, s in result.items():
        rows.append(
            [
                way,
                s["first_audio_ms"]["p50"],
                s["voice_to_voice_ms"]["p50"],
                *(f"{s[st]['p50']} ({s[st]['share_of_total']:.0%})" for st in STAGES),
                s["total_ms"]["p50"],
                s["overlap_ms"]["p50"],
                s.get("sentences_mean", ""),
            ]
        )
    return markdown_table(
        [
            "p50, ms",
            "first audio",
            "voice to voice",
            *STAGES,
            "handler total",
            "overlap",
            "sentences",
        ],
        rows,
        align="lrrrrrrrrr",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=4, help="spoken questions per way")
    args = parser.parse_args()

    from ray import serve

    from chat_handler import build_app as build_chat
    from handler_base.testing.speech import speak
    from ray_inference import embeddings, llm, reranker, tts, whisper
    from voice_assistant import build_app as build_voice

    questions = [speak(QUESTION.format(code=PRODUCTS[i % len(PRODUCTS)][0])) for i in range(args.n)]
    with tempfile.TemporaryDirectory() as data, local_serve() as base_url:
        apps = {
            "embeddings": embeddings.build_app({"profile": "cpu"}),
            "reranker": reranker.build_app({"profile": "cpu"}),
            "llm": llm.build_app({"profile": "cpu"}),
            "whisper": whisper.build_app({"profile": "cpu"}),
            "tts": tts.build_app({"profile": "cpu"}),
            "chat": build_chat({"milvus_uri": str(Path(data) / "milvus.db")}),
            "voice": build_voice(),
        }
        for name, application in apps.items():
            serve.run(application, name=name, route_prefix=f"/{name}")
        ingest = httpx.post(
            f"{base_url}/chat/knowledge/documents",
            json={"collection": "bench", "documents": corpus()},
            timeout=300,
        )
        ingest.raise_for_status()
        result = asyncio.run(run(base_url, questions))
    print_result({"bench": "voice", "questions": args.n, "ways": result}, table(result))


if __name__ == "__main__":
    main()
