"""The Gitea Actions workflow (.gitea/workflows/ci.yml): no Gitea runs here, so its
structure is checked, and the scripts of its release steps are run as they are written."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILE = ROOT / ".gitea" / "workflows" / "ci.yml"
PACKAGE_DIRS = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
TAG_CONDITION = "startsWith(github.ref, 'refs/tags/v')"


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW_FILE.read_text())
    return loaded


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean true.
    found = workflow.get("on", workflow.get(True))
    assert isinstance(found, dict), "the workflow has no triggers"
    return found


def runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def step_running(job: dict[str, Any], command: str) -> dict[str, Any]:
    matching = [step for step in job["steps"] if command in step.get("run", "")]
    assert len(matching) == 1, f"expected one step running {command!r}"
    found: dict[str, Any] = matching[0]
    return found


def uv() -> str:
    found = Path(sys.executable).parent / "uv"
    return str(found) if found.exists() else shutil.which("uv") or "uv"


def test_runs_on_main_pull_requests_and_version_tags(workflow: dict[Any, Any]) -> None:
    on = triggers(workflow)
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["tags"] == ["v*"]
    assert "pull_request" in on


def test_lint_and_test_run_the_repositorys_own_commands(workflow: dict[Any, Any]) -> None:
    jobs = workflow["jobs"]
    assert set(jobs) == {"lint", "test", "publish"}
    for name in ("lint", "test"):
        assert "if" not in jobs[name]
        assert "needs" not in jobs[name]
        assert jobs[name]["steps"][0]["uses"].startswith("actions/checkout@")
    assert "./dev test" in runs(jobs["test"])
    # The same commands as ./dev test runs before pytest, from the one place they live.
    assert "./dev lint" in runs(jobs["lint"])


def test_publish_runs_only_for_tags_after_lint_and_test(workflow: dict[Any, Any]) -> None:
    publish = workflow["jobs"]["publish"]
    assert set(publish["needs"]) == {"lint", "test"}
    assert publish["if"] == TAG_CONDITION


def test_the_token_comes_from_secrets_and_no_index_host_is_named(
    workflow: dict[Any, Any],
) -> None:
    step = step_running(workflow["jobs"]["publish"], "uv publish")
    assert step["env"]["UV_PUBLISH_TOKEN"] == "${{ secrets.UV_PUBLISH_TOKEN }}"
    assert re.fullmatch(
        r"\$\{\{ (vars|secrets)\.UV_PUBLISH_URL \}\}", step["env"]["UV_PUBLISH_URL"]
    )
    text = WORKFLOW_FILE.read_text()
    assert "secrets." not in yaml.safe_dump(
        {name: job for name, job in workflow["jobs"].items() if name != "publish"}
    )
    # URLs only as placeholders (`https://<gitea>/...`), never a real host.
    assert all(url.startswith("<") for url in re.findall(r"https?://(\S+)", text)), text
    for option in ("--publish-url", "--token", "--password"):
        assert option not in text


def test_the_publish_step_publishes_what_the_build_step_writes(workflow: dict[Any, Any]) -> None:
    publish = workflow["jobs"]["publish"]
    build = shlex.split(step_running(publish, "uv build")["run"])
    out_dir = build[build.index("--out-dir") + 1]
    assert f"uv publish {out_dir}/*" in runs(publish)
    names = [step["name"] for step in publish["steps"] if "name" in step]
    assert names.index("Build every package") < names.index("Publish")


def test_the_build_step_builds_every_package(workflow: dict[Any, Any], tmp_path: Path) -> None:
    command = shlex.split(step_running(workflow["jobs"]["publish"], "uv build")["run"])
    assert command[:2] == ["uv", "build"]
    command[0] = uv()
    command[command.index("--out-dir") + 1] = str(tmp_path)
    subprocess.run(command, cwd=ROOT, check=True, timeout=600)
    built = {path.name for path in tmp_path.iterdir() if path.suffix in (".whl", ".gz")}
    for package_dir in PACKAGE_DIRS:
        project = tomllib.loads((package_dir / "pyproject.toml").read_text())["project"]
        stem = f"{project['name'].replace('-', '_')}-{project['version']}"
        assert f"{stem}-py3-none-any.whl" in built
        assert f"{stem}.tar.gz" in built
    assert len(built) == 2 * len(PACKAGE_DIRS), built


@pytest.mark.parametrize(("offset", "accepted"), [("", True), (".post9", False)])
def test_the_tag_must_be_every_packages_version(
    workflow: dict[Any, Any], offset: str, accepted: bool
) -> None:
    step = next(
        step for step in workflow["jobs"]["publish"]["steps"] if "TAG" in step.get("env", {})
    )
    assert step["env"]["TAG"] == "${{ github.ref_name }}"
    version = tomllib.loads((PACKAGE_DIRS[0] / "pyproject.toml").read_text())["project"]["version"]
    env = {
        **os.environ,
        "TAG": f"v{version}{offset}",
        # `python` of the step is the runner's Python 3.11: here, this one.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", step["run"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert "does not match" in result.stderr
