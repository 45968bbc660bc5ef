"""Kubeflow pipelines started over NATS (``ai.pipeline.trigger``).

* :data:`PIPELINES` / :func:`get_pipeline`: the pipelines a trigger may name
  (``document-ingestion``), each with its params model.
* Runners: :class:`LocalRunner` (kfp's local subprocess runner, the embedded default)
  and :class:`KFPClientRunner` (``kfp.Client`` against a KFP API server).
* :class:`PipelineService`: serves ``ai.pipeline.trigger`` and reports each run on
  ``ai.pipeline.status.<run_id>`` as CloudEvents.

``python -m pipeline_bridge.pipelines compile`` writes the compiled pipelines to
``deploy/pipelines/``.
"""

from pipeline_bridge.pipelines.document_ingestion import DocumentIngestionParams
from pipeline_bridge.pipelines.registry import PIPELINES, PipelineDefinition, get_pipeline
from pipeline_bridge.pipelines.runners import (
    KFPClientRunner,
    LocalRunner,
    PipelineRunner,
    RunStatus,
)
from pipeline_bridge.pipelines.service import PipelineService, PipelineServiceConfig

__all__ = [
    "PIPELINES",
    "DocumentIngestionParams",
    "KFPClientRunner",
    "LocalRunner",
    "PipelineDefinition",
    "PipelineRunner",
    "PipelineService",
    "PipelineServiceConfig",
    "RunStatus",
    "get_pipeline",
]
