"""One local pipeline run, in a process of its own (started by :class:`LocalRunner`).

``python -m pipeline_bridge.pipelines.local_run PIPELINE RUN_DIR`` reads the run's
arguments from ``RUN_DIR/arguments.json``, runs the pipeline with kfp's local
``SubprocessRunner`` in this Python environment (outputs under ``RUN_DIR/outputs``) and
writes ``RUN_DIR/result.json``: ``{"state": "succeeded"}`` or ``{"state": "failed",
"error": "..."}``, the error naming the failed step and what it raised.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from pipeline_bridge.pipelines.runners import ARGUMENTS_FILE, RESULT_FILE

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (.+)$")
_FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'|Task '([^']+)' finished with status")


class _Tee:
    """Passes writes through and keeps the last lines, to find a step's error in."""

    def __init__(self, stream: TextIO, keep: int = 400) -> None:
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=keep)
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self.lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def failure_message(error: BaseException, output_lines: list[str]) -> str:
    """Why the run failed, in a line: the failed step and the last exception it printed."""
    text = _ANSI.sub("", str(error))
    match = _FAILED_TASK.search(text)
    step = (match.group(1) or match.group(2)) if match else None
    cause = None
    for line in reversed(output_lines):
        found = _EXCEPTION_LINE.match(_ANSI.sub("", line))
        if found:
            kind, message = found.groups()
            cause = message if kind == "RuntimeError" else f"{kind}: {message}"
            break
    if step and cause:
        return f"step {step!r} failed: {cause}"
    if cause:
        return cause
    return text or type(error).__name__


def run(pipeline_name: str, run_dir: Path) -> dict[str, Any]:
    """Run the pipeline; return the result to write."""
    import kfp.local

    from pipeline_bridge.pipelines.registry import get_pipeline

    arguments = json.loads((run_dir / ARGUMENTS_FILE).read_text(encoding="utf-8"))
    definition = get_pipeline(pipeline_name)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    # The steps run in this environment, not in their image: kfp warns about that.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir / "outputs"),
        raise_on_error=True,
    )
    try:
        definition.pipeline(**arguments)
    except Exception as exc:
        sys.stdout.flush()
        return {"state": "failed", "error": failure_message(exc, list(tee.lines))}
    finally:
        sys.stdout = tee.stream
    return {"state": "succeeded"}


def main(argv: list[str] | None = None) -> int:
    """Run one pipeline; exit 0 when it succeeded, 1 when it failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        result = run(args.pipeline, args.run_dir)
    except Exception as exc:
        result = {"state": "failed", "error": f"the run could not start: {exc}"}
    (args.run_dir / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    print(f"run {result['state']}" + (f": {result['error']}" if result.get("error") else ""))
    return 0 if result["state"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
