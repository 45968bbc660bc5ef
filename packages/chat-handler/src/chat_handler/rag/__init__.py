"""Retrieval-augmented generation: the pipeline and its prompt."""

from chat_handler.rag.pipeline import (
    NO_SOURCES_ANSWER,
    RERANKED_KEY,
    RAGConfig,
    RAGPipeline,
    document_filter,
)
from chat_handler.rag.prompt import PROMPT_TEMPLATE, Prompt, PromptBudget, build_prompt

__all__ = [
    "NO_SOURCES_ANSWER",
    "PROMPT_TEMPLATE",
    "RERANKED_KEY",
    "Prompt",
    "PromptBudget",
    "RAGConfig",
    "RAGPipeline",
    "build_prompt",
    "document_filter",
]
