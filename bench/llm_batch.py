"""Prompt evaluation speed of each cpu LLM by llama.cpp batch size (the prompt cache's block).

With the prompt cache on, the LLM deployment evaluates prompts in batches of
``PROMPT_BLOCK_TOKENS`` tokens (so that a prompt is evaluated in the same batches whether
its first blocks come from the cache or not). This measures what that batch size costs: a
chat prompt of about 1,000 tokens (the answer set's ferry timetable, the size of five
passages) is evaluated from scratch, in-process, 2 threads, for each model and each batch
size, the sizes taking turns within each repeat so that load drifts hit each alike.

Run alone (``uptime``): ``.venv/bin/python bench/llm_batch.py --repeat 5`` (``--quick``:
SmolLM2, one repeat, a 200-token prompt).
"""

import argparse
import gc
import time
from importlib import resources
from typing import Any

from _common import markdown_table, percentile, print_result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-1.5b"])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 512])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=1000, help="prompt tokens")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.models, args.repeat, args.tokens = ["smollm2-135m"], 1, 200

    from llama_cpp import Llama

    from ray_inference.llm_models import llm_model

    text = (
        resources.files("aictl.evaluation")
        .joinpath("answers/harwick-sound-ferry-timetable.md")
        .read_text(encoding="utf-8")
    )
    rows: list[list[Any]] = []
    runs: list[dict[str, Any]] = []
    for name in args.models:
        path = str(llm_model(name).gguf_path())
        models = {
            n: Llama(
                model_path=path,
                n_ctx=2048,
                n_threads=2,
                n_threads_batch=2,
                n_batch=n,
                verbose=False,
            )
            for n in args.batches
        }
        prompt = (models[args.batches[0]].tokenize(text.encode() * 3))[: args.tokens]
        seconds: dict[int, list[float]] = {n: [] for n in args.batches}
        for _ in range(args.repeat):
            for n, llm in models.items():
                llm.reset()
                start = time.perf_counter()
                llm.eval(prompt)
                seconds[n].append(time.perf_counter() - start)
        for n in args.batches:
            p50 = percentile(seconds[n], 50)
            runs.append(
                {
                    "model": name,
                    "n_batch": n,
                    "prompt_tokens": len(prompt),
                    "n": len(seconds[n]),
                    "p50_s": round(p50, 3),
                    "max_s": round(max(seconds[n]), 3),
                    "tokens_per_s": round(len(prompt) / p50, 1),
                }
            )
            rows.append(
                [
                    name,
                    n,
                    len(prompt),
                    len(seconds[n]),
                    f"{p50:.2f}",
                    f"{max(seconds[n]):.2f}",
                    f"{len(prompt) / p50:.0f}",
                ]
            )
        del models
        gc.collect()
    table = markdown_table(
        ["model", "n_batch", "prompt tokens", "n", "p50 s", "max s", "tokens/s"], rows
    )
    print_result({"bench": "llm_batch", "runs": runs}, table)


if __name__ == "__main__":
    main()
