"""The pipelines a trigger may name, with their params models and compiled packages."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from handler_base.errors import NotFoundError, validate_as
from handler_base.settings import Settings
from pipeline_bridge.pipelines import document_ingestion


@dataclass(frozen=True, slots=True)
class PipelineDefinition:
    """A pipeline that ``ai.pipeline.trigger`` can start.

    Attributes:
        name: The name a trigger gives (``pipeline``), also the kfp pipeline's name.
        pipeline: The ``@dsl.pipeline`` function (a kfp ``GraphComponent``).
        params_model: What a trigger's ``params`` must be.
        runtime_arguments: The arguments the service adds from its settings (never
            the caller's to set), e.g. where the knowledge API is.
        file_params: The params that name files the run reads (lists of paths); the
            service allows only files under its allowed folders.
    """

    name: str
    pipeline: Any
    params_model: type[BaseModel]
    runtime_arguments: Callable[[Settings], dict[str, Any]]
    file_params: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The pipeline's description, as compiled."""
        return str(self.pipeline.description or "")

    def arguments(
        self, params: BaseModel | Mapping[str, Any], settings: Settings
    ) -> dict[str, Any]:
        """The run's arguments: ``params`` validated, plus the runtime arguments.

        Raises:
            InvalidRequestError: ``params`` do not fit :attr:`params_model`.
            TooLargeError: A param is over a size limit.
        """
        checked = validate_as(self.params_model, params)
        # kfp refuses None anywhere in an argument (an inline document without an id).
        params_json = checked.model_dump(mode="json", exclude_none=True)
        return {**params_json, **self.runtime_arguments(settings)}

    def compile(self, path: str | Path) -> Path:
        """Write the compiled pipeline (kfp IR YAML) to ``path``."""
        from kfp import compiler

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(self.pipeline, str(target))
        return target


PIPELINES: dict[str, PipelineDefinition] = {
    definition.name: definition
    for definition in (
        PipelineDefinition(
            name=document_ingestion.NAME,
            pipeline=document_ingestion.document_ingestion,
            params_model=document_ingestion.DocumentIngestionParams,
            runtime_arguments=document_ingestion.runtime_arguments,
            file_params=("paths",),
        ),
    )
}
"""Every pipeline by name."""


def get_pipeline(name: str) -> PipelineDefinition:
    """The pipeline called ``name``.

    Raises:
        NotFoundError: There is none (the message lists the known ones).
    """
    try:
        return PIPELINES[name]
    except KeyError:
        known = ", ".join(sorted(PIPELINES))
        raise NotFoundError(f"no pipeline is called {name!r}; known pipelines: {known}") from None
