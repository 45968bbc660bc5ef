"""The ``document-ingestion`` pipeline: load and chunk, then embed and upsert.

Two steps, each a kfp lightweight Python component:

1. ``load-and-chunk`` reads the documents (``.txt``/``.md`` files by path, and texts
   given inline), splits each into chunks with the platform's chunker to count them and
   to refuse documents with no text, and writes the ingest requests, in batches of at
   most ``max_batch_chunks`` chunks, as a JSON dataset.
2. ``embed-and-upsert`` sends each batch to the knowledge-base API of the chat
   application (``POST {chat_url}/knowledge/documents``), which embeds and stores the
   chunks. Pipeline steps never open Milvus: in the embedded stack Milvus Lite allows
   one process, and the chat deployment is that process.

A component's body runs in another process (a subprocess locally, a pod on a cluster)
from its source alone, so everything it uses is imported inside it. On a cluster the
steps run in :data:`PIPELINE_IMAGE`, an image with this package installed.
"""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.

from typing import Annotated, Any, Self

from kfp import dsl
from kfp.dsl import Dataset, Input, Output
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from handler_base.knowledge import MAX_INGEST_DOCUMENTS, KnowledgeDocument
from handler_base.messages import DEFAULT_COLLECTION, CollectionName
from handler_base.settings import Settings

NAME = "document-ingestion"

PIPELINE_IMAGE = "ray-ai-platform/pipeline-bridge:0.1.0"
"""Image of the steps on a cluster: Python 3.11 with ``pipeline-bridge`` (and so kfp and
``handler-base``) installed from the platform's package index. Nothing is pip-installed
when a step starts: a package from a public index could belong to anyone."""

DEFAULT_MAX_BATCH_CHUNKS = 64
"""Chunks per knowledge-API call: bounded so each call embeds in a few seconds."""
MAX_PATH_CHARS = 4096

DocumentPath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]


class DocumentIngestionParams(BaseModel):
    """The ``params`` of a ``document-ingestion`` trigger.

    Example: ``{"collection": "manuals", "paths": ["/data/a.md"],
    "documents": [{"id": "note-1", "text": "...", "metadata": {"title": "Note"}}]}``.

    Attributes:
        collection: The knowledge-base collection to fill.
        paths: ``.txt`` or ``.md`` files, read where the step runs (the bridge's machine
            with the local runner; the step's pod on a cluster). A file's id is its path.
        documents: Texts given inline, as the knowledge API takes them.
        max_batch_chunks: Chunks sent to the knowledge API in one call, at most.
    """

    model_config = ConfigDict(extra="forbid")

    collection: CollectionName = DEFAULT_COLLECTION
    paths: list[DocumentPath] = Field(default_factory=list, max_length=MAX_INGEST_DOCUMENTS)
    documents: list[KnowledgeDocument] = Field(
        default_factory=list, max_length=MAX_INGEST_DOCUMENTS
    )
    max_batch_chunks: int = Field(default=DEFAULT_MAX_BATCH_CHUNKS, ge=1, le=1000)

    @model_validator(mode="after")
    def _something_to_ingest(self) -> Self:
        if not self.paths and not self.documents:
            raise ValueError("give at least one document: a path in paths or a text in documents")
        return self


def runtime_arguments(settings: Settings) -> dict[str, Any]:
    """The arguments the service adds to a run: where the knowledge API is.

    Callers cannot set it: a trigger must not point the pipeline at another server.
    """
    return {"chat_url": settings.service_url("chat")}


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)  # type: ignore[untyped-decorator]
def load_and_chunk(
    paths: list,  # type: ignore[type-arg]  # kfp reads the bare `list` as a JSON list
    documents: list,  # type: ignore[type-arg]
    collection: str,
    max_batch_chunks: int,
    batches: Output[Dataset],
) -> int:
    """Read and chunk the documents; write the ingest requests; return the chunk count."""
    import json

    from handler_base.knowledge import MAX_INGEST_DOCUMENTS, IngestRequest, KnowledgeDocument
    from handler_base.rag.documents import chunk_document, load_document

    loaded: list[KnowledgeDocument] = []
    for path in paths:
        try:
            document = load_document(path)
        except OSError as exc:
            raise RuntimeError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not document.text.strip():
            raise RuntimeError(f"{path} has no text")
        loaded.append(
            KnowledgeDocument(id=document.id, text=document.text, metadata=document.metadata)
        )
    loaded.extend(KnowledgeDocument.model_validate(d) for d in documents)

    requests: list[list[KnowledgeDocument]] = []
    batch: list[KnowledgeDocument] = []
    batch_chunks = total = 0
    for knowledge_document in loaded:
        count = len(chunk_document(knowledge_document.to_document()))
        if count == 0:
            name = knowledge_document.id or knowledge_document.text[:40]
            raise RuntimeError(f"document {name!r} has no text")
        full = batch_chunks + count > max_batch_chunks or len(batch) >= MAX_INGEST_DOCUMENTS
        if batch and full:
            requests.append(batch)
            batch, batch_chunks = [], 0
        batch.append(knowledge_document)
        batch_chunks += count
        total += count
    if batch:
        requests.append(batch)

    bodies = [
        IngestRequest(collection=collection, documents=b).model_dump(mode="json") for b in requests
    ]
    with open(batches.path, "w", encoding="utf-8") as file:
        json.dump(bodies, file)
    batches.metadata.update({"documents": len(loaded), "chunks": total, "batches": len(bodies)})
    print(f"loaded {len(loaded)} documents: {total} chunks in {len(bodies)} batches")
    return total


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)  # type: ignore[untyped-decorator]
def embed_and_upsert(batches: Input[Dataset], chat_url: str) -> int:
    """Send each batch to the knowledge API (it embeds and stores); return chunks stored."""
    import asyncio
    import json

    from handler_base.clients import KnowledgeClient
    from handler_base.errors import PlatformError

    with open(batches.path, encoding="utf-8") as file:
        bodies = json.load(file)

    async def send_all() -> int:
        stored = 0
        async with KnowledgeClient(mode="http", base_url=chat_url) as client:
            for number, body in enumerate(bodies, start=1):
                try:
                    answer = await client.ingest(body)
                except PlatformError as exc:
                    raise RuntimeError(
                        f"storing batch {number} of {len(bodies)} through the knowledge API "
                        f"at {chat_url} failed ({exc.code.value}): {exc.message}"
                    ) from None
                stored += answer.chunks
                print(f"batch {number}/{len(bodies)}: {answer.chunks} chunks stored")
        return stored

    return asyncio.run(send_all())


@dsl.pipeline(  # type: ignore[untyped-decorator]
    name=NAME,
    description="Load and chunk documents, then embed and store them through the "
    "knowledge-base API of the chat application.",
)
def document_ingestion(
    chat_url: str,
    paths: list = [],  # type: ignore[type-arg]  # noqa: B006  # kfp defaults are values
    documents: list = [],  # type: ignore[type-arg]  # noqa: B006
    collection: str = DEFAULT_COLLECTION,
    max_batch_chunks: int = DEFAULT_MAX_BATCH_CHUNKS,
) -> None:
    """``document-ingestion``: see the module docstring; params as DocumentIngestionParams."""
    loaded = load_and_chunk(
        paths=paths,
        documents=documents,
        collection=collection,
        max_batch_chunks=max_batch_chunks,
    ).set_display_name("load and chunk")
    embed_and_upsert(batches=loaded.outputs["batches"], chat_url=chat_url).set_display_name(
        "embed and upsert"
    )
