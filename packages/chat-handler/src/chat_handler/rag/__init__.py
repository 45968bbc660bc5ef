"""Retrieval-augmented generation: the pipeline and its prompt."""

from chat_handler.rag.grounding import AnswerGuard
from chat_handler.rag.pipeline import (
    NO_SOURCES_ANSWER,
    NOT_FOUND_ANSWER,
    RERANKED_KEY,
    RAGConfig,
    RAGPipeline,
    document_filter,
)
from chat_handler.rag.prompt import PROMPT_TEMPLATE, Prompt, PromptBudget, build_prompt

__all__ = [
    "NOT_FOUND_ANSWER",
    "NO_SOURCES_ANSWER",
    "PROMPT_TEMPLATE",
    "RERANKED_KEY",
    "AnswerGuard",
    "Prompt",
    "PromptBudget",
    "RAGConfig",
    "RAGPipeline",
    "build_prompt",
    "document_filter",
]
