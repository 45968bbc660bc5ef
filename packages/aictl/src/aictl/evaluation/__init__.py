"""Retrieval and answer quality: the labelled sets and their metrics.

Two sets: :data:`RETRIEVAL_SET`, questions over the Python language reference that
ships with CPython (:mod:`aictl.evaluation.python_reference`), for retrieval; and
:data:`EVAL_SET`, questions over the sample knowledge base with the facts a right answer
states, for answers. One place for both `aictl eval` and ``bench/retrieval.py``.

The answer set lives in its own modules: :mod:`aictl.evaluation.answer_set` (documents
with distractors; fact, follow-up and unanswerable questions),
:mod:`aictl.evaluation.answer_check` (the checker: numbers, units, negation, refusals,
citations, loops) and :mod:`aictl.evaluation.run_answers` (asking it through ``/chat``).
"""

from aictl.evaluation.metrics import (
    RetrievalScores,
    answer_contains,
    document_ranking,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    score_rankings,
)
from aictl.evaluation.python_reference import COLLECTION, RETRIEVAL_SET, RetrievalCase, corpus
from aictl.evaluation.sets import EVAL_SET, EvalCase

__all__ = [
    "COLLECTION",
    "EVAL_SET",
    "RETRIEVAL_SET",
    "EvalCase",
    "RetrievalCase",
    "RetrievalScores",
    "answer_contains",
    "corpus",
    "document_ranking",
    "ndcg_at_k",
    "normalize_answer",
    "recall_at_k",
    "score_rankings",
]
