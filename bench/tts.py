"""TTS on Ray Serve: real-time factor, handle against HTTP, whole text against sentences.

Starts its own local Ray (2 CPUs, loopback) and Serve, deploys ``ray_inference.tts`` with
the packaged Piper voice (cpu profile), and measures:

* real-time factor (synthesis time / audio duration) of a short and a long sentence,
  through the handle;
* latency of one short sentence through :class:`handler_base.clients.tts.TTSClient` by
  handle and by HTTP (p50, p99, HTTP/handle ratio);
* time to first audio of a paragraph: the whole text in one request, against one request
  per sentence (what the voice handler does); and the total time of each.

Run: ``.venv/bin/python bench/tts.py [-n 20] [--paragraph-runs 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import time
from typing import Any

from _common import (
    deploy_model_app,
    http_over_handle,
    local_serve,
    markdown_table,
    print_result,
    summarize,
    timed,
)
from handler_base.clients.tts import TTSClient
from handler_base.inference import SpeechAudio, SpeechRequest

SHORT = "Hello, how can I help you today?"
LONG = (
    "The platform runs every model as a Ray Serve deployment, and the handlers call them "
    "through deployment handles when they run inside the cluster, falling back to plain "
    "HTTP requests when they run somewhere else, so that one code path serves both cases."
)
PARAGRAPH = (
    "Sure, I can help with that. "
    "The reranker scores each passage against your question and keeps the best five. "
    "Then the language model writes an answer from those passages only. "
    "If nothing relevant is found, it says so instead of guessing. "
    "Each sentence of the answer is spoken as soon as it is ready."
)


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def duration_s(speech: SpeechAudio) -> float:
    return len(speech.audio) / 2 / speech.sample_rate


async def real_time_factor(client: TTSClient, text: str, n: int) -> dict[str, float]:
    request = SpeechRequest(input=text, response_format="pcm")
    seconds: list[float] = []
    audio: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        speech = await client.synthesize(request)
        seconds.append(time.perf_counter() - start)
        audio.append(duration_s(speech))
    rtf = [s / a for s, a in zip(seconds, audio, strict=True)]
    return {
        "chars": len(text),
        "audio_s": round(statistics.median(audio), 2),
        "synth_ms_p50": round(statistics.median(seconds) * 1000, 1),
        "rtf_p50": round(statistics.median(rtf), 3),
        "rtf_max": round(max(rtf), 3),
    }


async def latency(client: TTSClient, n: int) -> dict[str, float]:
    request = SpeechRequest(input=SHORT)
    await client.synthesize(request)  # warm the path
    return summarize(await timed(lambda: client.synthesize(request), n))


async def first_audio(client: TTSClient, runs: int) -> dict[str, float]:
    """Whole paragraph in one request against one request per sentence, in order."""
    whole_first: list[float] = []
    whole_total: list[float] = []
    split_first: list[float] = []
    split_total: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        await client.synthesize(SpeechRequest(input=PARAGRAPH))
        whole_first.append(time.perf_counter() - start)
        whole_total.append(whole_first[-1])
        start = time.perf_counter()
        for i, sentence in enumerate(sentences(PARAGRAPH)):
            await client.synthesize(SpeechRequest(input=sentence))
            if i == 0:
                split_first.append(time.perf_counter() - start)
        split_total.append(time.perf_counter() - start)
    return {
        "sentences": len(sentences(PARAGRAPH)),
        "whole_first_audio_ms": round(statistics.median(whole_first) * 1000, 1),
        "sentence_first_audio_ms": round(statistics.median(split_first) * 1000, 1),
        "first_audio_speedup": round(
            statistics.median(whole_first) / statistics.median(split_first), 2
        ),
        "whole_total_ms": round(statistics.median(whole_total) * 1000, 1),
        "sentence_total_ms": round(statistics.median(split_total) * 1000, 1),
    }


async def run(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    async with (
        TTSClient(mode="handle") as by_handle,
        TTSClient(mode="http", base_url=base_url) as by_http,
    ):
        await by_handle.synthesize(SpeechRequest(input=SHORT))  # warm the replica
        rtf = {
            "short": await real_time_factor(by_handle, SHORT, args.n),
            "long": await real_time_factor(by_handle, LONG, max(3, args.n // 4)),
        }
        handle = await latency(by_handle, args.n)
        http = await latency(by_http, args.n)
        paths = http_over_handle(handle, http)
        first = await first_audio(by_handle, args.paragraph_runs)
    return {"rtf": rtf, "paths": paths, "first_audio": first}


def table(result: dict[str, Any]) -> str:
    rtf, paths, first = result["rtf"], result["paths"], result["first_audio"]
    rows = [
        [
            f"RTF {name} ({r['chars']} chars, {r['audio_s']} s audio)",
            f"{r['rtf_p50']} p50, {r['rtf_max']} max ({r['synth_ms_p50']} ms)",
        ]
        for name, r in rtf.items()
    ]
    rows += [
        [
            f"short sentence, {label} p50 / p99",
            f"{paths[path]['p50_ms']} / {paths[path]['p99_ms']} ms",
        ]
        for label, path in (("handle", "handle"), ("HTTP", "http"))
    ]
    rows += [
        ["HTTP / handle (p50)", paths["http_over_handle_p50"]],
        [
            f"paragraph ({first['sentences']} sentences): first audio, whole text",
            f"{first['whole_first_audio_ms']} ms",
        ],
        [
            "paragraph: first audio, sentence by sentence",
            f"{first['sentence_first_audio_ms']} ms ({first['first_audio_speedup']}x sooner)",
        ],
        [
            "paragraph: total, whole / sentence by sentence",
            f"{first['whole_total_ms']} / {first['sentence_total_ms']} ms",
        ],
    ]
    return markdown_table(["measure", "value"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="requests per latency/RTF measure")
    parser.add_argument("--paragraph-runs", type=int, default=5, help="runs of the paragraph")
    parser.add_argument("--quick", action="store_true", help="-n 3, one paragraph run")
    args = parser.parse_args()
    if args.quick:
        args.n, args.paragraph_runs = 3, 1

    from ray_inference.tts import build_app

    with local_serve() as http_url:
        deploy_model_app(build_app(), "tts")
        result = asyncio.run(run(args, f"{http_url}/tts"))
    result["config"] = {
        "n": args.n,
        "paragraph_runs": args.paragraph_runs,
        "profile": "cpu",
        "voice": "en_US-joe-medium (Piper, onnxruntime 2 threads)",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print_result({"bench": "tts", **result}, table(result))


if __name__ == "__main__":
    main()
