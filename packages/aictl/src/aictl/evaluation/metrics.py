"""Ranking metrics as BEIR reports them, and the answer check.

nDCG@k and recall@k follow trec_eval's ndcg_cut and recall, which BEIR reports.

A ranking is a list of document ids, best first; a document that appears more than once
(several chunks of one document) counts at its first place only, as a document-level
judgement requires.
"""

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from handler_base.messages import Source


def _first_k_documents(ranking: Sequence[str], k: int) -> list[str]:
    seen: list[str] = []
    for doc_id in ranking:
        if doc_id not in seen:
            seen.append(doc_id)
        if len(seen) == k:
            break
    return seen


def ndcg_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """Normalized discounted cumulative gain at k.

    Gain = the graded relevance, discount 1/log2(rank + 1), divided by the gain of the
    ideal ordering; 0.0 with no relevant document.
    """
    dcg = sum(
        relevance.get(doc_id, 0) / math.log2(rank + 1)
        for rank, doc_id in enumerate(_first_k_documents(ranking, k), start=1)
    )
    ideal_gains = sorted((grade for grade in relevance.values() if grade > 0), reverse=True)[:k]
    ideal = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal_gains, start=1))
    return dcg / ideal if ideal else 0.0


def recall_at_k(ranking: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """The share of the relevant documents (grade > 0) found in the first k."""
    relevant = {doc_id for doc_id, grade in relevance.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_first_k_documents(ranking, k))) / len(relevant)


_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d)[,\u202f\u00a0 ](?=\d{3}\b)")
_NOT_WORD = re.compile(r"[^\w.]+")


def normalize_answer(text: str) -> str:
    """The answer rule's normal form of a text.

    Lower case, digit-group separators dropped ("5,200" and "5 200" -> "5200"), every
    run of other punctuation and spaces made one space, a full stop not between digits
    dropped.
    """
    text = _THOUSANDS_SEPARATOR.sub("", text.lower())
    text = re.sub(r"\.(?!\d)|(?<!\d)\.", " ", text)
    return " ".join(_NOT_WORD.sub(" ", text).split())


def answer_contains(answer: str, facts: Iterable[str]) -> bool:
    """Whether the answer states any of the facts.

    True when the normalized answer holds a fact's normalized form as whole words (so
    "3 years" does not match "13 years").
    """
    padded = f" {normalize_answer(answer)} "
    return any(f" {normalize_answer(fact)} " in padded for fact in facts)


@dataclass(frozen=True)
class RetrievalScores:
    """Mean nDCG@k and recall@k over a set of questions."""

    ndcg: float
    recall: float
    n: int


def score_rankings(
    rankings: Sequence[Sequence[str]], judgements: Sequence[Mapping[str, int]], k: int = 10
) -> RetrievalScores:
    """The mean of each question's nDCG@k and recall@k; rankings and judgements pair up."""
    if len(rankings) != len(judgements):
        raise ValueError(f"{len(rankings)} rankings for {len(judgements)} questions")
    n = len(rankings)
    if not n:
        return RetrievalScores(0.0, 0.0, 0)
    pairs = list(zip(rankings, judgements, strict=True))
    return RetrievalScores(
        ndcg=sum(ndcg_at_k(r, j, k) for r, j in pairs) / n,
        recall=sum(recall_at_k(r, j, k) for r, j in pairs) / n,
        n=n,
    )


def document_ranking(sources: Iterable[Source]) -> list[str]:
    """The document ids of search results, best first (a chunk's ``doc_id``)."""
    return [str(source.metadata.get("doc_id")) for source in sources]
