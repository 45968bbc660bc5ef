"""Retrieval-augmented generation: documents, chunking, prompts and the pipeline."""

from handler_base.rag.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    chunk_text,
    split_sentences,
)
from handler_base.rag.documents import (
    Chunk,
    Document,
    chunk_document,
    load_document,
    parse_document,
)
from handler_base.rag.pipeline import NO_SOURCES_ANSWER, RERANKED_KEY, RAGConfig, RAGPipeline
from handler_base.rag.prompt import SYSTEM_PROMPT, Prompt, PromptBudget, build_prompt

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "NO_SOURCES_ANSWER",
    "RERANKED_KEY",
    "SYSTEM_PROMPT",
    "Chunk",
    "Document",
    "Prompt",
    "PromptBudget",
    "RAGConfig",
    "RAGPipeline",
    "build_prompt",
    "chunk_document",
    "chunk_text",
    "load_document",
    "parse_document",
    "split_sentences",
]
