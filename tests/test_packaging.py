"""Every package builds to its own wheel, with its typing marker and its metadata."""

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def uv() -> str:
    found = Path(sys.executable).parent / "uv"
    return str(found) if found.exists() else shutil.which("uv") or "uv"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    for package_dir in PACKAGE_DIRS:
        subprocess.run(
            [uv(), "build", "--quiet", "--wheel", "--out-dir", str(out), str(package_dir)],
            check=True,
            timeout=300,
        )
    return {p.name.split("-")[0]: p for p in out.glob("*.whl")}


@pytest.mark.parametrize("package_dir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_package_builds_to_a_wheel(wheels: dict[str, Path], package_dir: Path) -> None:
    module = package_dir.name.replace("-", "_")
    wheel = wheels[module]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert f"{module}/__init__.py" in names
        assert f"{module}/py.typed" in names
        assert not any(name.startswith(("tests/", f"{module}/tests/")) for name in names)
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["Name"] == package_dir.name
    assert metadata["Requires-Python"] == ">=3.11"


def test_handler_base_does_not_pull_ray_into_a_cluster(wheels: dict[str, Path]) -> None:
    """Installing handler-base through runtime_env must never replace the cluster's Ray."""
    with zipfile.ZipFile(wheels["handler_base"]) as archive:
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    ray_requirements = [r for r in metadata.get_all("Requires-Dist", []) if r.startswith("ray")]
    assert ray_requirements, "ray should be offered as the 'serve' extra"
    assert all("extra ==" in r for r in ray_requirements)
