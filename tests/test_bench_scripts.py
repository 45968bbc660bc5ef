"""Every bench script runs: ``bench/quick.py`` runs each one's ``--quick`` mode for real.

The scripts share one local Ray of their own (a subprocess; the models load once for all
of them), so a script whose code no longer fits the platform fails here rather than on
the day someone needs its figures. The figures of these tiny runs are not looked at.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "bench"
NOT_SCRIPTS = {"_common.py", "quick.py"}
QUICK_TIMEOUT_S = 2400
"""About 9 minutes on a quiet 2-core machine; CI machines can be slower."""
RUN_ELSEWHERE = {"soak.py": "tests/test_soak.py", "cluster.py": "tests/test_cluster.py"}


def quick_scripts() -> tuple[str, ...]:
    sys.path.insert(0, str(BENCH))
    try:
        import quick  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    return tuple(quick.SCRIPTS)


def test_every_bench_script_is_run_quick_or_by_a_named_test() -> None:
    scripts = {p.name for p in BENCH.glob("*.py")} - NOT_SCRIPTS
    assert scripts == set(quick_scripts()) | set(RUN_ELSEWHERE)
    for script, test in RUN_ELSEWHERE.items():
        assert (BENCH.parent / test).is_file(), (script, test)


@pytest.mark.timeout(QUICK_TIMEOUT_S + 60)
def test_every_quick_mode_runs_and_prints_its_result(tmp_path: Path) -> None:
    # Its own session (process group): on a timeout its Ray goes down with it.
    with subprocess.Popen(
        [sys.executable, str(BENCH / "quick.py")],
        cwd=tmp_path,
        # Its own Ray: not the address of the session's.
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as quick:
        try:
            output, _ = quick.communicate(timeout=QUICK_TIMEOUT_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(quick.pid, signal.SIGKILL)
    summary = [line for line in output.splitlines() if line.startswith('{"bench": "quick"')]
    assert summary, output[-6000:]
    scripts = json.loads(summary[-1])["scripts"]
    failed = [s for s in scripts if not s["ok"]]
    assert failed == [], output[-6000:]
    assert [s["script"] for s in scripts] == list(quick_scripts())
    # Each printed its own result line, named after the script.
    assert [s["bench"] for s in scripts] == [s["script"].removesuffix(".py") for s in scripts]
    assert quick.returncode == 0, output[-6000:]
