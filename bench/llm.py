"""LLM on Ray Serve: time to first token and tokens per second, whole against streaming,
handle against HTTP.

Starts its own local Ray (2 CPUs, loopback) and Serve, deploys ``ray_inference.llm``
(SmolLM2-135M-Instruct Q4_1 on llama.cpp, cpu profile), and measures through
:class:`handler_base.clients.llm.LLMClient`:

* a short completion ("What is the capital of France?", temperature 0, about 8 tokens)
  by handle and by HTTP: p50, p99, HTTP/handle ratio;
* a longer answer (``--max-tokens``, temperature 0, the same text every time) whole and
  streamed, by handle and by HTTP: time to first token (for a whole answer, the caller
  sees nothing before the end), total time, and tokens per second.

Run: ``.venv/bin/python bench/llm.py [-n 20] [--long-runs 5] [--max-tokens 128]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import time
from typing import Any

from handler_base.clients.llm import LLMClient
from handler_base.inference import ChatCompletionRequest

SHORT = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
RAY_ENV = {
    # Single-machine mode, loopback only, no usage stats (read when Ray is imported/started).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_AUTH_MODE": "disabled",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def short_latency(client: LLMClient, n: int) -> dict[str, Any]:
    request = ChatCompletionRequest.model_validate(
        {"messages": SHORT, "temperature": 0, "max_tokens": 16}
    )
    await client.chat(request)  # warm the path
    times: list[float] = []
    tokens = 0
    for _ in range(n):
        start = time.perf_counter()
        response = await client.chat(request)
        times.append(time.perf_counter() - start)
        tokens = response.usage.completion_tokens
    return {
        "p50_ms": ms(percentile(times, 50)),
        "p99_ms": ms(percentile(times, 99)),
        "completion_tokens": tokens,
        "answer": response.text,
    }


async def whole_vs_stream(client: LLMClient, runs: int, max_tokens: int) -> dict[str, Any]:
    """The long answer whole and streamed, alternating, ``runs`` times each."""
    request = ChatCompletionRequest.model_validate(
        {"messages": LONG, "temperature": 0, "seed": 1, "max_tokens": max_tokens}
    )
    whole_total: list[float] = []
    stream_first: list[float] = []
    stream_total: list[float] = []
    tokens = 0
    for _ in range(runs):
        start = time.perf_counter()
        response = await client.chat(request)
        whole_total.append(time.perf_counter() - start)
        tokens = response.usage.completion_tokens

        start = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        async for piece in client.stream_text(request):
            if first is None:
                first = time.perf_counter() - start
            pieces.append(piece)
        stream_total.append(time.perf_counter() - start)
        stream_first.append(first if first is not None else stream_total[-1])
        if "".join(pieces) != response.text:
            raise AssertionError("the streamed answer differs from the whole one")
    whole_s, stream_s = statistics.median(whole_total), statistics.median(stream_total)
    first_s = statistics.median(stream_first)
    return {
        "completion_tokens": tokens,
        "whole_first_token_ms": ms(whole_s),
        "whole_total_ms": ms(whole_s),
        "whole_tokens_per_s": round(tokens / whole_s, 1),
        "stream_first_token_ms": ms(first_s),
        "stream_first_token_p99_ms": ms(percentile(stream_first, 99)),
        "stream_total_ms": ms(stream_s),
        "stream_tokens_per_s": round(tokens / stream_s, 1),
        "stream_decode_tokens_per_s": round((tokens - 1) / max(stream_s - first_s, 1e-9), 1),
        "first_token_speedup": round(whole_s / first_s, 1),
    }


async def run(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    async with (
        LLMClient(mode="handle") as by_handle,
        LLMClient(mode="http", base_url=base_url) as by_http,
    ):
        handle = await short_latency(by_handle, args.n)
        http = await short_latency(by_http, args.n)
        short = {
            "handle": handle,
            "http": http,
            "http_over_handle_p50": round(http["p50_ms"] / handle["p50_ms"], 3),
        }
        long = {
            "handle": await whole_vs_stream(by_handle, args.long_runs, args.max_tokens),
            "http": await whole_vs_stream(by_http, args.long_runs, args.max_tokens),
        }
    return {"short": short, "long": long}


def table(result: dict[str, Any]) -> str:
    short, long = result["short"], result["long"]
    lines = [
        "| measure | handle | HTTP |",
        "|---|---|---|",
        f"| short completion ({short['handle']['completion_tokens']} tokens), p50 / p99 | "
        f"{short['handle']['p50_ms']} / {short['handle']['p99_ms']} ms | "
        f"{short['http']['p50_ms']} / {short['http']['p99_ms']} ms |",
        f"| short completion, HTTP / handle (p50) | | {short['http_over_handle_p50']} |",
    ]
    rows = [
        ("long answer ({tokens} tokens): whole, first token = total", "whole_total_ms", " ms"),
        ("long answer: whole, tokens/s", "whole_tokens_per_s", ""),
        ("long answer: streamed, time to first token (p50)", "stream_first_token_ms", " ms"),
        ("long answer: streamed, time to first token (p99)", "stream_first_token_p99_ms", " ms"),
        ("long answer: streamed, total", "stream_total_ms", " ms"),
        ("long answer: streamed, tokens/s (whole stream)", "stream_tokens_per_s", ""),
        (
            "long answer: streamed, decode tokens/s (after the first)",
            "stream_decode_tokens_per_s",
            "",
        ),
        ("first token, streamed vs whole (x sooner)", "first_token_speedup", "x"),
    ]
    tokens = long["handle"]["completion_tokens"]
    for label, key, unit in rows:
        lines.append(
            f"| {label.format(tokens=tokens)} | {long['handle'][key]}{unit} | "
            f"{long['http'][key]}{unit} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="short completions per path")
    parser.add_argument("--long-runs", type=int, default=5, help="long answers per mode/path")
    parser.add_argument("--max-tokens", type=int, default=128, help="length of the long answer")
    args = parser.parse_args()

    for name, value in RAY_ENV.items():
        os.environ.setdefault(name, value)
    import ray
    from ray import serve

    from ray_inference.llm import build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"profile": "cpu"}), name="llm", route_prefix="/llm")
        result = asyncio.run(run(args, f"http://127.0.0.1:{port}/llm"))
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    result["config"] = {
        "n": args.n,
        "long_runs": args.long_runs,
        "max_tokens": args.max_tokens,
        "profile": "cpu",
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF (llama.cpp, 2 threads, context 2048)",
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    print(json.dumps(result, separators=(",", ":")))
    print(table(result))


if __name__ == "__main__":
    main()
