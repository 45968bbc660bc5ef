"""Whisper on Ray Serve: real-time factor of base against tiny.en, handle against HTTP.

Starts its own local Ray (2 CPUs, loopback) and Serve, deploys ``ray_inference.whisper``
twice (cpu profile): Whisper base (int8, joined into a temporary data folder) as app
``whisper`` and tiny.en as app ``whisper-tiny``. The clips are spoken by Piper with the
packaged voice. It measures:

* real-time factor (transcription time / audio duration) and word accuracy (1 - WER) of
  each model on the same clips, through the handle; base both detecting the language
  and told it is English;
* latency of one short clip through :class:`handler_base.clients.stt.STTClient` by
  handle and by HTTP, calls alternating (p50, p99, HTTP/handle ratio).

Run: ``.venv/bin/python bench/whisper.py [-n 10] [--rtf-runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Any

from _common import (
    deploy_model_app,
    http_over_handle,
    local_serve,
    markdown_table,
    print_result,
    summarize,
)
from handler_base.clients.stt import STTClient
from handler_base.inference import TranscriptionOptions
from handler_base.testing.speech import read_wav, speak, word_accuracy

CLIPS = {
    "short": "Please turn on the kitchen lights and open the garden door.",
    "medium": (
        "The quick brown fox jumps over the lazy dog near the river. "
        "Please send the quarterly report to the finance team before Friday afternoon."
    ),
    "long": (
        "The platform runs every model as a Ray Serve deployment, and the handlers call them "
        "through deployment handles when they run inside the cluster. When they run "
        "somewhere else, they fall back to plain HTTP requests, so that one code path serves "
        "both cases. Speech is transcribed by Whisper and answered by a small language model."
    ),
}
VARIANTS = {
    "base": ("whisper", None),
    "base, language=en": ("whisper", TranscriptionOptions(language="en")),
    "tiny.en": ("whisper-tiny", None),
}
"""What is measured -> (Serve app, options): base detects the language unless told."""


def audio_seconds(wav: bytes) -> float:
    samples, rate = read_wav(wav)
    return len(samples) / rate


async def real_time_factor(
    client: STTClient,
    clips: dict[str, bytes],
    runs: int,
    options: TranscriptionOptions | None,
) -> dict[str, dict[str, float]]:
    """Each clip ``runs`` times through ``client``: RTF and word accuracy."""
    result: dict[str, dict[str, float]] = {}
    for name, wav in clips.items():
        seconds: list[float] = []
        accuracy: list[float] = []
        for _ in range(runs):
            start = time.perf_counter()
            transcript = await client.transcribe(wav, options)
            seconds.append(time.perf_counter() - start)
            accuracy.append(word_accuracy(CLIPS[name], transcript.text))
        audio = audio_seconds(wav)
        result[name] = {
            "audio_s": round(audio, 2),
            "ms_p50": round(statistics.median(seconds) * 1000, 1),
            "rtf_p50": round(statistics.median(seconds) / audio, 3),
            "rtf_max": round(max(seconds) / audio, 3),
            "word_accuracy": round(min(accuracy), 3),
        }
    return result


async def latency(by_handle: STTClient, by_http: STTClient, wav: bytes, n: int) -> dict[str, Any]:
    """``n`` calls each way, alternating so both see the same load."""
    times: dict[str, list[float]] = {"handle": [], "http": []}
    for _ in range(n):
        for name, client in (("handle", by_handle), ("http", by_http)):
            start = time.perf_counter()
            await client.transcribe(wav)
            times[name].append(time.perf_counter() - start)
    return http_over_handle(summarize(times["handle"]), summarize(times["http"]))


async def run(args: argparse.Namespace, http_url: str) -> dict[str, Any]:
    clips = {name: speak(text) for name, text in CLIPS.items()}
    rtf: dict[str, Any] = {}
    for variant, (app, options) in VARIANTS.items():
        async with STTClient(mode="handle", app_name=app) as client:
            await client.transcribe(clips["short"])  # warm the replica
            rtf[variant] = await real_time_factor(client, clips, args.rtf_runs, options)
    async with (
        STTClient(mode="handle") as by_handle,
        STTClient(mode="http", base_url=f"{http_url}/whisper") as by_http,
    ):
        await by_http.transcribe(clips["short"])  # warm the HTTP path
        paths = await latency(by_handle, by_http, clips["short"], args.n)
    return {"rtf": rtf, "paths": paths}


def table(result: dict[str, Any]) -> str:
    rtf, paths = result["rtf"], result["paths"]
    rows = [
        [
            f"{clip} ({r['audio_s']} s)",
            model,
            f"{r['ms_p50']} ms",
            f"{r['rtf_p50']} ({r['rtf_max']})",
            r["word_accuracy"],
        ]
        for clip in CLIPS
        for model in VARIANTS
        for r in (rtf[model][clip],)
    ]
    headers = ["clip (audio s)", "model", "transcribe p50", "RTF p50 (max)"]
    path_rows = [
        [label, f"{paths[path]['p50_ms']} ms", f"{paths[path]['p99_ms']} ms"]
        for label, path in (("handle", "handle"), ("HTTP", "http"))
    ]
    path_rows.append(["HTTP / handle", paths["http_over_handle_p50"], ""])
    return "\n\n".join(
        [
            markdown_table([*headers, "word accuracy (min)"], rows),
            markdown_table(["base, short clip", "p50", "p99"], path_rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="calls each way for handle vs HTTP")
    parser.add_argument("--rtf-runs", type=int, default=3, help="runs of each clip per model")
    parser.add_argument("--beam-size", type=int, default=5, help="beam width of both models")
    parser.add_argument("--quick", action="store_true", help="-n 2, one run of each clip")
    args = parser.parse_args()
    if args.quick:
        args.n, args.rtf_runs = 2, 1

    from ray import serve

    from ray_inference.whisper import build_app

    data_dir = tempfile.mkdtemp(prefix="bench-whisper-")
    try:
        with local_serve() as http_url:
            start = time.perf_counter()
            deploy_model_app(
                build_app({"data_dir": data_dir, "beam_size": args.beam_size}), "whisper"
            )
            base_start_s = time.perf_counter() - start
            serve.run(
                build_app({"model": "tiny.en", "beam_size": args.beam_size}),
                name="whisper-tiny",
                route_prefix="/whisper-tiny",
            )
            result = asyncio.run(run(args, http_url))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    result["config"] = {
        "n": args.n,
        "rtf_runs": args.rtf_runs,
        "beam_size": args.beam_size,
        "profile": "cpu",
        "engine": "faster-whisper int8, cpu_threads=2, vad_filter on",
        "base_first_start_s": round(base_start_s, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print_result({"bench": "whisper", **result}, table(result))


if __name__ == "__main__":
    main()
