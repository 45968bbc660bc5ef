"""Retrieval and answer quality: the labelled set and its metrics.

One place for both `aictl eval` and the bench scripts.
"""

from aictl.evaluation.metrics import answer_contains, ndcg_at_k, normalize_answer, recall_at_k
from aictl.evaluation.sets import EVAL_SET, EvalCase

__all__ = [
    "EVAL_SET",
    "EvalCase",
    "answer_contains",
    "ndcg_at_k",
    "normalize_answer",
    "recall_at_k",
]
