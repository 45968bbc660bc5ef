"""TTS memory over time: the TTS replica's resident memory (RSS) under a steady low load.

Deploys one TTS application per ``--variant`` (the packaged Piper voice, cpu profile) on a
local Ray, then, every ``--interval-s`` seconds, speaks one new sentence (varied words and
lengths, 3 to 45 words, from a fixed seed) with each variant in turn, over HTTP, until
``--minutes`` have passed. Every ``--sample-s`` seconds it samples each replica's RSS
(the replica's pid from Ray's actor table, its RSS from psutil) and prints the sample as a
JSON line, so a long run's file shows its progress.

At the end: the curve (RSS every ``--report-min`` minutes), the growth per request over
the first and the last half of the run, and whether the curve levels off (the last half
grows less than a fifth of the first half's per-request growth, or under 5 MB in all); and
the synthesis time of each variant (the replica's model time, p50 and p99), measured
interleaved. A variant is ``NAME=JSON``: the TTS builder arguments it changes, for
instance ``arena_off={"cpu_mem_arena": false}``.

Run: ``.venv/bin/python bench/tts_memory.py --minutes 60`` (``--quick``: half a minute,
sampled every 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from _common import local_serve, markdown_table, print_result
from handler_base.inference import MODEL_TIME_HEADER
from handler_base.testing.soak import rss_mb, stack_processes

WORDS = str.split(
    "the quick brown fox jumps over a lazy dog while seven bright engineers measure memory "
    "growth across many varied sentences today tomorrow weather answer question knowledge "
    "voice assistant platform speaks clearly and slowly about rivers mountains cities "
    "twenty thousand people visited Paris in June, because the museum opened again"
)
LEVELS_OFF_FRACTION = 0.2
LEVELS_OFF_MB = 5.0


def sentence(rng: random.Random) -> str:
    """A new sentence of 3 to 45 words, sometimes a question."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 45))]
    return " ".join(words).capitalize() + rng.choice(".?!")


@dataclass
class Variant:
    """One TTS application and what was seen of it."""

    name: str
    args: dict[str, Any]
    pid: int = 0
    requests: int = 0
    errors: int = 0
    model_ms: list[float] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)


def replica_pids(variants: list[Variant]) -> None:
    """Each variant's replica pid, from Ray's actor table."""
    processes = stack_processes()
    for variant in variants:
        variant.pid = processes[f"replica {app_name(variant)}/TTSDeployment"]


def app_name(variant: Variant) -> str:
    return f"tts_{variant.name}"


def sample(variants: list[Variant], start: float) -> None:
    sizes = rss_mb({v.name: v.pid for v in variants})
    minute = round((time.monotonic() - start) / 60, 2)
    for variant in variants:
        rss = sizes[variant.name]
        if rss is not None:
            variant.samples.append({"minute": minute, "requests": variant.requests, "rss_mb": rss})
    line = {v.name: {"requests": v.requests, "rss_mb": sizes[v.name]} for v in variants}
    print(json.dumps({"sample_minute": minute, **line}), flush=True)


async def speak(http: httpx.AsyncClient, url: str, variant: Variant, text: str) -> None:
    response = await http.post(
        f"{url}/{app_name(variant)}/v1/audio/speech",
        json={"input": text, "response_format": "pcm"},
    )
    variant.requests += 1
    if response.status_code != 200:
        variant.errors += 1
        return
    variant.model_ms.append(float(response.headers[MODEL_TIME_HEADER]))


async def load(args: argparse.Namespace, url: str, variants: list[Variant]) -> float:
    """Requests and samples until the time is up; the run's length in minutes."""
    rng = random.Random(args.seed)
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = start
    async with httpx.AsyncClient(timeout=120) as http:
        while time.monotonic() < end:
            if time.monotonic() >= next_sample:
                sample(variants, start)
                next_sample += args.sample_s
            text = sentence(rng)
            tick = time.monotonic()
            # Alternate which variant goes first, so neither always follows the other.
            order = variants if rng.random() < 0.5 else variants[::-1]
            for variant in order:
                await speak(http, url, variant, text)
            await asyncio.sleep(max(0.0, args.interval_s - (time.monotonic() - tick)))
    sample(variants, start)
    return (time.monotonic() - start) / 60


def growth(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Growth per request over the first and the last half, and whether it levels off."""
    first, middle, last = samples[0], samples[len(samples) // 2], samples[-1]

    def per_request(a: dict[str, float], b: dict[str, float]) -> float | None:
        requests = b["requests"] - a["requests"]
        return round((b["rss_mb"] - a["rss_mb"]) / requests, 3) if requests else None

    first_half = per_request(first, middle)
    last_half = per_request(middle, last)
    last_half_mb = round(last["rss_mb"] - middle["rss_mb"], 1)
    levels_off = last_half_mb < LEVELS_OFF_MB or (
        first_half is not None
        and last_half is not None
        and first_half > 0
        and last_half < LEVELS_OFF_FRACTION * first_half
    )
    return {
        "start_mb": first["rss_mb"],
        "end_mb": last["rss_mb"],
        "max_mb": max(s["rss_mb"] for s in samples),
        "first_half_mb_per_request": first_half,
        "last_half_mb_per_request": last_half,
        "last_half_mb": last_half_mb,
        "levels_off": levels_off,
    }


def curve(variants: list[Variant], every_min: float) -> list[list[Any]]:
    """Rows of the curve: the last sample at or before each ``every_min`` mark, and the end."""
    end = variants[0].samples[-1]["minute"]
    marks = [m * every_min for m in range(int(end // every_min) + 1)]
    rows = []
    for mark in [*marks, end]:
        row: list[Any] = [f"{mark:g}"]
        for variant in variants:
            before = [s for s in variant.samples if s["minute"] <= mark + 1e-9]
            point = before[-1] if before else variant.samples[0]
            row += [int(point["requests"]), point["rss_mb"]]
        rows.append(row)
    return rows


def summary(variants: list[Variant]) -> dict[str, Any]:
    result = {}
    for variant in variants:
        times = sorted(variant.model_ms)
        result[variant.name] = {
            "args": variant.args,
            "requests": variant.requests,
            "errors": variant.errors,
            "synthesis_p50_ms": round(statistics.median(times), 1) if times else None,
            "synthesis_p99_ms": round(times[min(len(times) - 1, round(0.99 * (len(times) - 1)))], 1)
            if times
            else None,
            **growth(variant.samples),
        }
    return result


def table(result: dict[str, Any], rows: list[list[Any]]) -> str:
    names = list(result["variants"])
    headers = ["minute"] + [f"{name} {what}" for name in names for what in ("requests", "RSS MB")]
    lines = [markdown_table(headers, rows, "r" * len(headers)), ""]
    measures = [
        "requests",
        "errors",
        "start_mb",
        "end_mb",
        "max_mb",
        "first_half_mb_per_request",
        "last_half_mb_per_request",
        "last_half_mb",
        "levels_off",
        "synthesis_p50_ms",
        "synthesis_p99_ms",
    ]
    summary_rows = [[m, *(result["variants"][n][m] for n in names)] for m in measures]
    lines.append(markdown_table(["measure", *names], summary_rows, "l" + "r" * len(names)))
    return "\n".join(lines)


def parse_variant(text: str) -> Variant:
    name, _, args = text.partition("=")
    return Variant(name=name, args=json.loads(args) if args else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the run")
    parser.add_argument("--quick", action="store_true", help="half a minute, sampled every 10 s")
    parser.add_argument("--interval-s", type=float, default=6.0, help="seconds between sentences")
    parser.add_argument("--sample-s", type=float, default=30.0, help="seconds between RSS samples")
    parser.add_argument("--report-min", type=float, default=10.0, help="minutes between curve rows")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        help="NAME=JSON of TTS builder args, repeatable (default: shipped={})",
    )
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.sample_s, args.report_min = 0.5, 10.0, 0.5
    variants: list[Variant] = args.variant or [Variant("shipped", {})]

    from ray import serve

    from ray_inference.tts import build_app

    with local_serve() as http_url:
        for variant in variants:
            serve.run(
                build_app(variant.args),
                name=app_name(variant),
                route_prefix=f"/{app_name(variant)}",
            )
        replica_pids(variants)
        minutes = asyncio.run(load(args, http_url, variants))
    result: dict[str, Any] = {"bench": "tts_memory", "variants": summary(variants)}
    result["config"] = {
        "minutes": round(minutes, 1),
        "interval_s": args.interval_s,
        "sample_s": args.sample_s,
        "seed": args.seed,
        "voice": "en_US-joe-medium (Piper, onnxruntime)",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    print_result(result, table(result, curve(variants, args.report_min)))


if __name__ == "__main__":
    main()
