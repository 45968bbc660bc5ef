"""LLM on Ray Serve: time to first token and tokens per second, whole against streaming,
handle against HTTP.

Starts its own local Ray (2 CPUs, loopback) and Serve, deploys ``ray_inference.llm``
(``--llm``: a cpu model by name, the default Qwen2.5-Coder-0.5B on llama.cpp), and
measures through
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
import os
import platform
import statistics
import time
from typing import Any

from _common import (
    deploy_model_app,
    http_over_handle,
    local_serve,
    markdown_table,
    ms,
    percentile,
    print_result,
    summarize,
    timed,
)
from handler_base.clients.llm import LLMClient
from handler_base.inference import ChatCompletionRequest
from ray_inference.llm_models import DEFAULT_LLM_MODEL

SHORT = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]


async def short_latency(client: LLMClient, n: int) -> dict[str, Any]:
    request = ChatCompletionRequest.model_validate(
        {"messages": SHORT, "temperature": 0, "max_tokens": 16}
    )
    response = await client.chat(request)  # warm the path

    async def call() -> None:
        nonlocal response
        response = await client.chat(request)

    times = await timed(call, n)
    return {
        **summarize(times),
        "completion_tokens": response.usage.completion_tokens,
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
        short = http_over_handle(handle, http)
        long = {
            "handle": await whole_vs_stream(by_handle, args.long_runs, args.max_tokens),
            "http": await whole_vs_stream(by_http, args.long_runs, args.max_tokens),
        }
    return {"short": short, "long": long}


def table(result: dict[str, Any]) -> str:
    short, long = result["short"], result["long"]
    rows: list[list[Any]] = [
        [
            f"short completion ({short['handle']['completion_tokens']} tokens), p50 / p99",
            *(f"{short[p]['p50_ms']} / {short[p]['p99_ms']} ms" for p in ("handle", "http")),
        ],
        ["short completion, HTTP / handle (p50)", "", short["http_over_handle_p50"]],
    ]
    measures = [
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
    rows += [
        [label.format(tokens=tokens), *(f"{long[p][key]}{unit}" for p in ("handle", "http"))]
        for label, key, unit in measures
    ]
    return markdown_table(["measure", "handle", "HTTP"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="short completions per path")
    parser.add_argument("--llm", default=DEFAULT_LLM_MODEL, help="the cpu model, by name")
    parser.add_argument("--long-runs", type=int, default=5, help="long answers per mode/path")
    parser.add_argument("--max-tokens", type=int, default=128, help="length of the long answer")
    parser.add_argument("--quick", action="store_true", help="-n 3, one long run of 32 tokens")
    args = parser.parse_args()
    if args.quick:
        args.n, args.long_runs, args.max_tokens = 3, 1, 32

    from ray_inference.llm import build_app
    from ray_inference.llm_models import llm_model

    with local_serve() as http_url:
        deploy_model_app(build_app({"profile": "cpu", "model": args.llm}), "llm")
        result = asyncio.run(run(args, f"{http_url}/llm"))
    result["config"] = {
        "n": args.n,
        "long_runs": args.long_runs,
        "max_tokens": args.max_tokens,
        "profile": "cpu",
        "model": f"{llm_model(args.llm).title} GGUF (llama.cpp, 2 threads, context 2048)",
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    print_result({"bench": "llm", **result}, table(result))


if __name__ == "__main__":
    main()
