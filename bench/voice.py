"""Voice: time to first audio, as a share of voice to voice, on one fixed multi-sentence answer.

Deploys the whole cpu stack on a local Ray (embeddings, reranker, LLM, Whisper, TTS, the
chat handler with Milvus Lite in a temporary folder, the voice handler), ingests a small
corpus and asks one spoken question, again and again. The chat answers at temperature 0,
so the answer is the same text each time (the script checks it and says how many
sentences and seconds of audio it is). Round by round, interleaved, each way once:

- ``http stream``: ``POST /voice/stream``; ``handle stream``: ``voice_stream`` through
  :class:`VoiceClient` in handle mode; ``http whole``: ``POST /voice``;
- ``http stream, clause``: ``POST /voice_clause/stream``, a second voice app (no model of
  its own) that sends the first sentence's first clause to TTS early
  (``first_clause_chars``);
- the cuts, each measured on the stage it targets: the LLM alone with its prompt cache
  on (``/llm``) and off (``/llm_nocache``, a second LLM app), on the very messages the
  chat handler sends for this question (time to first token, to the first sentence,
  to the end); Whisper alone with its language set (``/whisper``, ``en``, the
  application's default) and detected (``/whisper_detect``, ``default_language: null``).

Before each request that reaches an LLM, that LLM answers one token to another question
(same system prompt, other passages): a real voice service seldom hears the same question
twice in a row, and the prompt cache would otherwise reuse the whole prompt, not just the
fixed system prompt.

Per way: *first audio* (sending the question to receiving the first audio; for the whole
route, the only audio), *voice to voice* (until all of the audio has arrived), their ratio,
and the stages of the first audio from the handler's ``timings_ms``: stt; rag (embed,
search, rerank); the LLM until its first token (``first_token`` less stt and rag, so it
holds the chat handler's hop and prompt building) and on to the first sentence; the first
sentence's TTS; and the rest (queues in the handler, the proxy and the transport).

Run: ``flock /tmp/bench.lock .venv/bin/python bench/voice.py -n 10`` (``--quick``: 2 rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from _common import deploy_model_app, local_serve, markdown_table, percentile, print_result

COLLECTION = "bench"
CORPUS = [
    {
        "id": "zx41",
        "text": (
            "The ZX-41 flux capacitor is made by Acme Orbital. It costs 417 euros and ships "
            "in teal. It is serviced every 90 days."
        ),
        "metadata": {"title": "ZX-41 flux capacitor"},
    },
    {
        "id": "qb7",
        "text": "The QB-7 harmonic resonator costs 129 euros. It ships in amber.",
        "metadata": {"title": "QB-7 harmonic resonator"},
    },
    {
        "id": "desk",
        "text": "The support desk opens at 9 in the morning and closes at 5 in the evening.",
        "metadata": {"title": "support desk"},
    },
]
QUESTION = "What is the ZX-41 flux capacitor, what does it cost and how often is it serviced?"
OTHER_QUESTION = "When does the support desk open?"
"""Asked of an LLM (one token) before each measured request: see the module doc."""
FIRST_CLAUSE_CHARS = 20
MODEL_APPS = ("embeddings", "reranker", "llm", "whisper", "tts")
"""The apps in their shipped settings (an attached run reuses running ones, see _common)."""
VOICE_WAYS = ("http stream", "handle stream", "http whole", "http stream, clause")
LLM_WAYS = ("llm, cache on", "llm, cache off")
STT_WAYS = ("whisper, language en", "whisper, detected")
FIRST_AUDIO_STAGES = (
    "stt",
    "embed",
    "search",
    "rerank",
    "llm_first_token",
    "llm_to_first_sentence",
    "first_tts",
    "rest",
)

Measure = dict[str, Any]


def wav_seconds(audio: bytes) -> float:
    from handler_base.audio import read_wav

    return read_wav(audio).duration_s


def first_audio_stages(timings: dict[str, Any], first_audio_s: float) -> dict[str, float]:
    """The time to first audio cut into its stages (ms), from the handler's ``timings_ms``."""
    rag = timings["rag"]
    first_audio = first_audio_s * 1000
    known = {
        "stt": timings["stt"],
        "embed": timings["embed"],
        "search": timings["search"],
        "rerank": timings["rerank"],
        "llm_first_token": timings["first_token"] - timings["stt"] - rag,
        "llm_to_first_sentence": timings["first_sentence"] - timings["first_token"],
        "first_tts": timings["first_tts"],
    }
    return {**known, "rest": first_audio - sum(known.values())}


async def http_stream(client: httpx.AsyncClient, route: str, wav: bytes) -> Measure:
    start = time.perf_counter()
    first: float | None = None
    done: dict[str, Any] = {}
    audio_s = 0.0
    async with client.stream(
        "POST",
        f"{route}/stream",
        content=wav,
        params={"collection": COLLECTION},
        headers={"content-type": "audio/wav"},
    ) as response:
        response.raise_for_status()
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                if event == "audio":
                    first = first or time.perf_counter() - start
                    data = json.loads(line.removeprefix("data: "))
                    audio_s += wav_seconds(base64.b64decode(data["audio"]))
                elif event == "done":
                    done = json.loads(line.removeprefix("data: "))
                elif event == "error":
                    raise RuntimeError(line)
    end = time.perf_counter() - start
    if first is None:
        raise RuntimeError("the stream ended without audio")
    return {
        "first_audio": first,
        "voice_to_voice": end,
        "timings": done["timings_ms"],
        "response": done["response"],
        "sources": done["sources"],
        "transcript": done["transcript"],
        "sentences": done["sentences"],
        "audio_s": audio_s,
    }


async def http_whole(client: httpx.AsyncClient, wav: bytes) -> Measure:
    start = time.perf_counter()
    response = await client.post(
        "/voice",
        content=wav,
        params={"collection": COLLECTION},
        headers={"content-type": "audio/wav"},
    )
    response.raise_for_status()
    end = time.perf_counter() - start
    body = response.json()
    return {
        "first_audio": end,
        "voice_to_voice": end,
        "timings": body["timings_ms"],
        "response": body["response"],
        "audio_s": wav_seconds(base64.b64decode(body["audio"])),
    }


async def handle_stream(voice: Any, wav: bytes) -> Measure:
    from handler_base.messages import VoiceAudioEvent, VoiceDoneEvent, VoiceRequest

    start = time.perf_counter()
    first: float | None = None
    done: VoiceDoneEvent | None = None
    audio_s = 0.0
    async for event in voice.voice_stream(VoiceRequest(audio=wav, collection=COLLECTION)):
        if isinstance(event, VoiceAudioEvent):
            first = first or time.perf_counter() - start
            audio_s += wav_seconds(event.audio)
        elif isinstance(event, VoiceDoneEvent):
            done = event
    end = time.perf_counter() - start
    if first is None or done is None:
        raise RuntimeError("the stream ended without audio or without its done event")
    return {
        "first_audio": first,
        "voice_to_voice": end,
        "timings": done.timings_ms.model_dump(),
        "response": done.response,
        "sentences": done.sentences,
        "audio_s": audio_s,
    }


async def llm_first_sentence(client: httpx.AsyncClient, route: str, messages: list[Any]) -> Measure:
    """The LLM stage of the first audio alone: time to first token and to the first sentence.

    The stream is closed once the first sentence is complete (the rest is not timed).
    """
    from voice_assistant.sentences import SentenceSplitter

    splitter = SentenceSplitter()
    start = time.perf_counter()
    first_token: float | None = None
    sentences: list[str] = []
    body = {"messages": messages, "temperature": 0, "max_tokens": 256, "stream": True}
    async with client.stream("POST", f"{route}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line.removeprefix("data: "))["choices"]
            piece = choices[0]["delta"].get("content") if choices else None
            if piece:
                first_token = first_token or time.perf_counter() - start
                sentences = splitter.feed(piece)
                if sentences:
                    break
    end = time.perf_counter() - start
    return {
        "first_token": first_token or end,
        "first_sentence": end,
        "response": (sentences or splitter.flush())[0],
    }


async def transcribe(client: httpx.AsyncClient, route: str, wav: bytes) -> Measure:
    start = time.perf_counter()
    response = await client.post(
        f"{route}/v1/audio/transcriptions", files={"file": ("q.wav", wav, "audio/wav")}
    )
    response.raise_for_status()
    end = time.perf_counter() - start
    model = response.headers.get("x-model-time-ms")
    return {
        "total": end,
        "model": float(model) / 1000 if model else None,
        "response": response.json()["text"],
        "language": response.json()["language"],
    }


async def prime(client: httpx.AsyncClient, route: str) -> None:
    """Leave another question's prompt in the LLM's cache (see the module doc)."""
    from chat_handler.rag.pipeline import RAGConfig
    from chat_handler.rag.prompt import build_prompt
    from handler_base.messages import Source

    config = RAGConfig()
    desk = CORPUS[2]
    prompt = build_prompt(
        OTHER_QUESTION,
        [Source(id=str(desk["id"]), text=str(desk["text"]), score=1.0)],
        [],
        config.budget,
        config.prompt_template,
    )
    messages = [m.model_dump() for m in prompt.messages]
    body = {"messages": messages, "temperature": 0, "max_tokens": 1}
    response = await client.post(f"{route}/v1/chat/completions", json=body)
    response.raise_for_status()


def chat_messages(transcript: str, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the chat handler sends the LLM for this transcript and these sources."""
    from chat_handler.rag.pipeline import RAGConfig
    from chat_handler.rag.prompt import build_prompt
    from handler_base.messages import Source

    config = RAGConfig()
    prompt = build_prompt(
        transcript,
        [Source.model_validate(s) for s in sources],
        [],
        config.budget,
        config.prompt_template,
    )
    return [m.model_dump() for m in prompt.messages]


def stat(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1), "p99": round(percentile(values, 99), 1)}


def voice_summary(measures: list[Measure], streamed: bool) -> dict[str, Any]:
    first = [m["first_audio"] * 1000 for m in measures]
    whole = [m["voice_to_voice"] * 1000 for m in measures]
    out: dict[str, Any] = {
        "n": len(measures),
        "first_audio_ms": stat(first),
        "voice_to_voice_ms": stat(whole),
        "share": stat([f / w * 100 for f, w in zip(first, whole, strict=True)]),
        "answers": len({m["response"] for m in measures}),
        "audio_s": round(statistics.median(m["audio_s"] for m in measures), 2),
    }
    if streamed:
        stages = [first_audio_stages(m["timings"], m["first_audio"]) for m in measures]
        out["stages_ms"] = {s: stat([st[s] for st in stages]) for s in FIRST_AUDIO_STAGES}
        out["sentences"] = round(statistics.median(m["sentences"] for m in measures), 1)
    else:
        out["stages_ms"] = {
            s: stat([m["timings"][s] for m in measures])
            for s in ("stt", "rag", "generate", "tts", "total")
        }
    return out


def cut_summary(measures: list[Measure], keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(measures), "answers": len({m["response"] for m in measures})}
    for key in keys:
        values = [m[key] * 1000 for m in measures if m.get(key) is not None]
        if values:
            out[f"{key}_ms"] = stat(values)
    return out


async def run(base_url: str, wav: bytes, rounds: int, max_s: float) -> dict[str, Any]:
    from handler_base.clients import VoiceClient
    from handler_base.testing.speech import silence_wav

    voice_measures: dict[str, list[Measure]] = {way: [] for way in VOICE_WAYS}
    llm_measures: dict[str, list[Measure]] = {way: [] for way in LLM_WAYS}
    stt_measures: dict[str, list[Measure]] = {way: [] for way in STT_WAYS}

    def summary() -> dict[str, Any]:
        texts = {m["response"] for ms in voice_measures.values() for m in ms}
        return {
            "answer": reference["response"],
            "answer_sentences": reference["sentences"],
            "answer_audio_s": round(reference["audio_s"], 2),
            "answers_seen": len(texts),
            "transcript": reference["transcript"],
            "voice": {
                way: voice_summary(found, streamed="stream" in way)
                for way, found in voice_measures.items()
                if found
            },
            "llm": {
                way: cut_summary(found, ("first_token", "first_sentence"))
                for way, found in llm_measures.items()
            },
            "llm_same_first_sentence_as_voice": all(
                reference["response"].startswith(m["response"])
                for ms in llm_measures.values()
                for m in ms
            ),
            "stt": {
                way: cut_summary(found, ("total", "model")) for way, found in stt_measures.items()
            },
        }

    async with (
        httpx.AsyncClient(base_url=base_url, timeout=600) as client,
        VoiceClient(mode="handle") as voice,
    ):
        voice_ways: dict[str, Callable[[bytes], Awaitable[Measure]]] = {
            "http stream": lambda audio: http_stream(client, "/voice", audio),
            "handle stream": lambda audio: handle_stream(voice, audio),
            "http whole": lambda audio: http_whole(client, audio),
            "http stream, clause": lambda audio: http_stream(client, "/voice_clause", audio),
        }
        reference = await voice_ways["http stream"](wav)  # warm-up; its prompt for the LLM cut
        messages = chat_messages(reference["transcript"], reference["sources"])
        llm_routes = dict(zip(LLM_WAYS, ("/llm", "/llm_nocache"), strict=True))
        stt_routes = dict(zip(STT_WAYS, ("/whisper", "/whisper_detect"), strict=True))
        for way in VOICE_WAYS[1:]:  # silence: no LLM answer, a cheap warm-up of each path
            await voice_ways[way](silence_wav(1.0))
        for route in llm_routes.values():
            await llm_first_sentence(client, route, messages)
        for route in stt_routes.values():
            await transcribe(client, route, wav)
        # The cuts first: their stages are short, so they get their n even on a busy machine.
        started = time.perf_counter()
        for round_ in range(rounds):
            if time.perf_counter() - started > max_s * 0.3:
                print(f"cuts: time budget spent after {round_} rounds", flush=True)
                break
            for way, route in llm_routes.items():
                await prime(client, route)
                llm_measures[way].append(await llm_first_sentence(client, route, messages))
            for way, route in stt_routes.items():
                stt_measures[way].append(await transcribe(client, route, wav))
        print("partial:", json.dumps(summary()), flush=True)
        for round_ in range(rounds):
            if time.perf_counter() - started > max_s:
                print(f"time budget spent: stopping after {round_} rounds", flush=True)
                break
            for way, call in voice_ways.items():
                await prime(client, "/llm")
                voice_measures[way].append(await call(wav))
            print("partial:", json.dumps(summary()), flush=True)
    return summary()


def tables(result: dict[str, Any]) -> str:
    voice = result["voice"]
    rows = [
        [
            way,
            s["n"],
            f"{s['first_audio_ms']['p50']:.0f} / {s['first_audio_ms']['p99']:.0f}",
            f"{s['voice_to_voice_ms']['p50']:.0f} / {s['voice_to_voice_ms']['p99']:.0f}",
            f"{s['share']['p50']:.0f}% / {s['share']['p99']:.0f}%",
            "yes" if s["share"]["p99"] < 35 else ("p50 only" if s["share"]["p50"] < 35 else "no"),
        ]
        for way, s in voice.items()
    ]
    out = [
        markdown_table(
            ["way", "n", "first audio ms p50 / p99", "voice to voice", "share", "< 35%"],
            rows,
            align="lrrrrl",
        ),
        "",
    ]
    streams = [w for w in voice if "stream" in w]
    stage_rows = [
        [stage, *(f"{voice[w]['stages_ms'][stage]['p50']:.0f}" for w in streams)]
        for stage in FIRST_AUDIO_STAGES
    ]
    first_audio = [f"{voice[w]['first_audio_ms']['p50']:.0f}" for w in streams]
    stage_rows.append(["first audio", *first_audio])
    out += [markdown_table(["first audio stage, p50 ms", *streams], stage_rows, "l" + "r" * 9), ""]
    cut_rows = [
        [way, s["n"], *(f"{s[k]['p50']:.0f} / {s[k]['p99']:.0f}" for k in keys)]
        for group, keys in (
            ("llm", ("first_token_ms", "first_sentence_ms")),
            ("stt", ("total_ms", "model_ms")),
        )
        for way, s in result[group].items()
        if all(k in s for k in keys)
    ]
    out.append(
        markdown_table(
            ["cut", "n", "llm first token / stt call", "llm first sentence / stt model"],
            cut_rows,
            "lrrr",
        )
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="rounds (requests per way)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, to try the script")
    parser.add_argument(
        "--max-s",
        type=float,
        default=1200,
        help="start no round after this many seconds (the cuts: 30%% of it)",
    )
    args = parser.parse_args()
    rounds = 2 if args.quick else args.n

    from ray import serve

    from chat_handler import build_app as build_chat
    from handler_base.testing.speech import speak
    from ray_inference import embeddings, llm, reranker, tts, whisper
    from voice_assistant import build_app as build_voice

    load_start = os.getloadavg()
    wav = speak(QUESTION)
    # 3 logical CPUs: the compared second LLM, Whisper and voice apps need a slot each,
    # though only one request runs at a time (the machine has 2 cores).
    with tempfile.TemporaryDirectory() as data, local_serve(num_cpus=3) as base_url:
        # The model apps in their shipped settings, and the compared variants beside them.
        apps = {
            "embeddings": embeddings.build_app({"profile": "cpu"}),
            "reranker": reranker.build_app({"profile": "cpu"}),
            "llm": llm.build_app({"profile": "cpu"}),
            "llm_nocache": llm.build_app({"profile": "cpu", "prompt_cache": False}),
            "whisper": whisper.build_app({"profile": "cpu"}),
            "whisper_detect": whisper.build_app({"profile": "cpu", "default_language": None}),
            "tts": tts.build_app({"profile": "cpu"}),
            "chat": build_chat({"milvus_uri": str(Path(data) / "milvus.db")}),
            "voice": build_voice(),
            "voice_clause": build_voice({"first_clause_chars": FIRST_CLAUSE_CHARS}),
        }
        for name, application in apps.items():
            if name in MODEL_APPS:
                deploy_model_app(application, name)
            else:
                serve.run(application, name=name, route_prefix=f"/{name}")
        ingest = httpx.post(
            f"{base_url}/chat/knowledge/documents",
            json={"collection": COLLECTION, "documents": CORPUS},
            timeout=300,
        )
        ingest.raise_for_status()
        started = time.perf_counter()
        result = asyncio.run(run(base_url, wav, rounds, args.max_s))
        result["run_s"] = round(time.perf_counter() - started, 1)
    result = {
        "bench": "voice",
        "rounds": rounds,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        **result,
    }
    print_result(result, tables(result))


if __name__ == "__main__":
    main()
