"""The package split of ARCHITECTURE.md: imports only point down, and declared deps match."""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "handler-base": "handler_base",
    "ray-inference": "ray_inference",
    "chat-handler": "chat_handler",
    "voice-assistant": "voice_assistant",
    "pipeline-bridge": "pipeline_bridge",
    "aictl": "aictl",
}
OUR_MODULES = set(PACKAGES.values())

# Which of our packages each package may import. Handlers reach the models and each
# other through Ray handles or HTTP, never by importing them.
ALLOWED_IMPORTS = {
    "handler_base": set(),
    "ray_inference": {"handler_base"},
    "chat_handler": {"handler_base"},
    "voice_assistant": {"handler_base"},
    "pipeline_bridge": {"handler_base"},
    "aictl": OUR_MODULES - {"aictl"},
}


def imported_top_level_modules(source_dir: Path) -> dict[str, set[Path]]:
    found: dict[str, set[Path]] = {}
    for path in source_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.relative_to(ROOT))
    return found


@pytest.mark.parametrize(("distribution", "module"), PACKAGES.items())
def test_imports_only_point_down(distribution: str, module: str) -> None:
    imports = imported_top_level_modules(ROOT / "packages" / distribution / "src" / module)
    ours = {name: files for name, files in imports.items() if name in OUR_MODULES - {module}}
    forbidden = {name: files for name, files in ours.items() if name not in ALLOWED_IMPORTS[module]}
    assert not forbidden, f"{module} must not import {forbidden}"


@pytest.mark.parametrize(("distribution", "module"), PACKAGES.items())
def test_each_package_declares_the_packages_it_imports(distribution: str, module: str) -> None:
    package_dir = ROOT / "packages" / distribution
    project = tomllib.loads((package_dir / "pyproject.toml").read_text())["project"]
    declared = {
        dep.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
        for dep in project.get("dependencies", [])
    }
    imports = imported_top_level_modules(package_dir / "src" / module)
    needed = {dist for dist, mod in PACKAGES.items() if mod in imports and mod != module}
    assert needed <= declared, f"{distribution} imports {needed - declared} without declaring it"


@pytest.mark.parametrize("distribution", PACKAGES)
def test_src_layout_with_typing_marker_and_tests(distribution: str) -> None:
    package_dir = ROOT / "packages" / distribution
    module_dir = package_dir / "src" / PACKAGES[distribution]
    assert (module_dir / "__init__.py").is_file()
    assert (module_dir / "py.typed").is_file()
    assert any((package_dir / "tests").rglob("test_*.py")), f"{distribution} has no tests"
