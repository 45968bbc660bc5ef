"""Every bench script runs: ``bench/quick.py`` runs each one's ``--quick`` mode for real.

The scripts share one local Ray of their own (a subprocess; the models load once for all
of them), so a script whose code no longer fits the platform fails here rather than on
the day someone needs its figures. The figures of these tiny runs are not looked at.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "bench"
NOT_SCRIPTS = {"_common.py", "quick.py"}
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


def test_every_quick_mode_runs_and_prints_its_result(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "quick.py")],
        cwd=tmp_path,
        # Its own Ray: not the address of the session's.
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    output = done.stdout + done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith('{"bench": "quick"')]
    assert summary, output[-6000:]
    scripts = json.loads(summary[-1])["scripts"]
    failed = [s for s in scripts if not s["ok"]]
    assert failed == [], output[-6000:]
    assert [s["script"] for s in scripts] == list(quick_scripts())
    # Each printed its own result line, named after the script.
    assert [s["bench"] for s in scripts] == [s["script"].removesuffix(".py") for s in scripts]
    assert done.returncode == 0, output[-6000:]
