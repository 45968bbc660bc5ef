"""Every bench script's ``--quick`` mode, one after another on one local Ray and Serve.

Each script runs as ``python bench/<script> --quick`` would, attached to this process's
Ray (see ``_common``): a model app is loaded once, by the first script that needs it, and
the later ones reuse it; the apps a script adds for itself are deleted after it. The
figures are too small to mean anything: this shows that the scripts still run and print
their result, and CI runs it (``tests/test_bench_scripts.py``).

Left out: ``soak.py`` (its library, ``handler_base.testing.soak``, is what
``tests/test_soak.py`` runs), ``cluster.py`` (it starts a multi-node cluster of its own,
as ``tests/test_cluster.py`` does).

Run: ``.venv/bin/python bench/quick.py`` (``--only hops.py tts.py`` for some). Prints a
line per script as it ends, then one JSON line: ``{"bench": "quick", "scripts": [...]}``
with each script's name, seconds, ``ok`` and the ``bench`` name of the JSON line it printed.
"""

import argparse
import contextlib
import io
import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _common import ATTACH_ENV, local_serve, markdown_table

BENCH_DIR = Path(__file__).resolve().parent
SCRIPTS = (
    "hops.py",
    "nats_roundtrip.py",
    "embeddings.py",
    "llm.py",
    "llm_batch.py",
    "tts.py",
    "whisper.py",
    "hotwords.py",
    "retrieval.py",
    "ingest.py",
    "chat.py",
    "answers.py",
    "bridge.py",
    "overload.py",
    "voice.py",
    "tts_memory.py",
)
LOGICAL_CPUS = 8
"""Ray's CPUs here: every script's apps fit side by side (the runs are tiny, not timed)."""


class _Tee(io.TextIOBase):
    """Write to the terminal and keep a copy (the script's JSON line is read from it)."""

    def __init__(self, terminal: Any) -> None:
        self.terminal = terminal
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.terminal.write(text)
        return self.copy.write(text)

    def flush(self) -> None:
        self.terminal.flush()


def result_line(output: str) -> dict[str, Any] | None:
    """The JSON object a script printed (``print_result``'s first line), if any."""
    for line in output.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                found = json.loads(line)
                if isinstance(found, dict) and "bench" in found:
                    return found
    return None


def run_script(name: str) -> dict[str, Any]:
    """Run ``bench/<name> --quick`` in this process; what became of it."""
    print(f"\n=== {name} --quick", flush=True)
    started = time.perf_counter()
    tee = _Tee(sys.stdout)
    argv = sys.argv
    sys.argv = [str(BENCH_DIR / name), "--quick"]
    error = None
    try:
        with contextlib.redirect_stdout(tee):
            runpy.run_path(str(BENCH_DIR / name), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = f"exited with {exc.code}"
    except Exception as exc:  # reported with the others, not raised
        error = "".join(traceback.format_exception_only(exc)).strip()
        traceback.print_exc()
    finally:
        sys.argv = argv
    printed = result_line(tee.copy.getvalue())
    if error is None and printed is None:
        error = "no JSON result line was printed"
    return {
        "script": name,
        "seconds": round(time.perf_counter() - started, 1),
        "ok": error is None,
        "bench": printed["bench"] if printed else None,
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="these scripts only")
    args = parser.parse_args()
    scripts = args.only or SCRIPTS
    results = []
    with local_serve(num_cpus=LOGICAL_CPUS) as url:
        os.environ[ATTACH_ENV] = url
        try:
            for name in scripts:
                results.append(run_script(name))
                r = results[-1]
                print(f"=== {name}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']} s")
        finally:
            del os.environ[ATTACH_ENV]
    rows = [[r["script"], r["seconds"], "ok" if r["ok"] else r["error"]] for r in results]
    print(json.dumps({"bench": "quick", "scripts": results}))
    print(markdown_table(["script", "seconds", "result"], rows, "lrl"))
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
