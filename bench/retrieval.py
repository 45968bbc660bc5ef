"""Retrieval quality: nDCG@10 and recall@10 of dense, BM25, the reranker, store hybrid.

Every labelled set (:mod:`aictl.evaluation`), each method against dense alone with a
paired bootstrap interval (:mod:`aictl.evaluation.stats`):

* ``python_reference``: the Python language reference that ships with CPython (79
  topics), 60 questions written as users ask, avoiding the reference's words;
* ``python_reference_terms``: the same corpus, 88 queries in the reference's own terms
  (keywords and its phrases, as a developer types them);
* ``answers``: the answer set of ``aictl eval`` (10 documents with distractors, about 40
  chunks): its fact questions, and its follow-ups in their standalone form;
* ``sample``: the sample knowledge base that ``aictl up`` ingests (3 documents, 12
  questions; too small to separate methods, kept as a check).

Documents are chunked as ingest chunks them (``chunk_document``, 800/100 characters) and
embedded with all-MiniLM-L6-v2 (int8 ONNX), the embeddings app's model, called here in
process (``TextEncoder``, the class the app runs) rather than through Serve: quality does
not depend on the transport. Scores are per document: a document's rank is the rank of
its best chunk.

Methods, each over the top ``--candidates`` chunks (50) unless a ``top_k`` is named:

* ``dense``: cosine search in Milvus Lite through the chat handler's ``MilvusStore``, the
  baseline of every interval; ``dense, top_k K``: its first K chunks (with K the chat's
  ``top_k``, what the chat passes on with no reranker);
* ``bm25``: Milvus Lite full-text search (a BM25 function over the whole corpus, the
  ``standard`` analyzer: words in lower case, no stemming, no stop words), in a
  collection of its own;
* ``rerank, top_k K, dense W``: the chat pipeline: the first K dense chunks reordered by
  the reranker's ``HybridScorer`` (its BM25 over the candidates only), fused with the
  cosine at dense share W; K is ``--top-ks`` (the chat route's default ``top_k``) and
  ``--candidates``, W the shipped default and ``--dense-weights``;
* ``store hybrid``: Milvus ``hybrid_search`` of the dense and the BM25 field of that same
  collection, fused by reciprocal rank (RRF, k=60) or by Milvus's weighted ranker (0.5
  each), and the RRF list reranked by the default ``HybridScorer``.

The row marked ``(default pipeline)`` is what the chat does with its defaults (the chat
route's ``top_k``, the reranker's ``DEFAULT_DENSE_WEIGHT``). Each method's per-question
nDCG@10 is compared with dense alone's by a paired bootstrap (10,000 resamples, seed 0):
against ``dense`` (``--candidates`` chunks), and for the rows that reorder fewer chunks
also against ``dense, top_k K``, the same candidates in dense order.
``answer in 5 passages``: the share of questions with a document of their highest grade
among the first ``top_n`` (5) passages, the ones the chat puts in the prompt (the same
five for dense at any ``top_k``), with its paired interval against dense.

It measures quality only (no timings), which load does not change, so it needs no quiet
machine: ``nice .venv/bin/python bench/retrieval.py [--top-ks 10 20 30] [--output
FILE.json]``; ``--quick``: the first 20 questions of each set.
"""

import argparse
import asyncio
import json
import re
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from _common import markdown_table, print_result
from aictl.evaluation import (
    EVAL_SET,
    RETRIEVAL_SET,
    corpus,
    document_ranking,
    ndcg_at_k,
    recall_at_k,
)
from aictl.evaluation.python_reference_terms import TERMS_SET
from aictl.evaluation.run_retrieval import answer_set_cases
from aictl.evaluation.stats import paired_bootstrap
from aictl.local import sample_documents
from chat_handler.stores import KnowledgeRecord, MilvusStore
from handler_base.knowledge import KnowledgeDocument
from handler_base.messages import ChatRequest, Source
from handler_base.rag.documents import Chunk, Document, chunk_document
from handler_base.settings import Settings
from ray_inference.reranker import DEFAULT_DENSE_WEIGHT, HybridScorer
from ray_inference.text_encoder import TextEmbeddings, TextEncoder

K = 10
RRF_K = 60
BASELINE = "dense"
CHAT_TOP_K: int = ChatRequest.model_fields["top_k"].default
"""The chat route's default number of candidates (``top_k``)."""
CHAT_TOP_N: int = ChatRequest.model_fields["top_n"].default
"""The passages the chat keeps for the prompt (``top_n``)."""
REFERENCES = {
    "dense": "0.645 (all-MiniLM-L6-v2)",
    "bm25": "0.679 (BM25)",
}
"""BEIR SciFact nDCG@10 (a different data set: scientific claims), as issue 15 states."""


class Case(Protocol):
    """A labelled question: the question and the graded relevance of the documents."""

    @property
    def question(self) -> str: ...

    @property
    def relevance(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class LabelledSet:
    """A set of questions over a corpus; sets with the same ``corpus`` share one index."""

    name: str
    title: str
    corpus: str
    documents: Callable[[], list[Document]]
    cases: Sequence[Case]


def sample_corpus() -> list[Document]:
    return [KnowledgeDocument.model_validate(d).to_document() for d in sample_documents()]


def answer_set() -> LabelledSet:
    """The answer set of ``aictl eval`` as a retrieval set: its fact questions, and its
    follow-ups in their standalone form (what retrieval is asked after the rewrite)."""
    from aictl.evaluation.answer_set import answer_documents

    return LabelledSet(
        "answers",
        "Answer set (fact questions and standalone follow-ups)",
        "answers",
        answer_documents,
        answer_set_cases(),
    )


def labelled_sets() -> list[LabelledSet]:
    sets = [
        LabelledSet(
            "python_reference",
            "Python language reference, questions as users ask",
            "python_reference",
            corpus,
            RETRIEVAL_SET,
        ),
        LabelledSet(
            "python_reference_terms",
            "Python language reference, queries in its own terms",
            "python_reference",
            corpus,
            TERMS_SET,
        ),
    ]
    sets.append(answer_set())
    sets.append(LabelledSet("sample", "Sample knowledge base", "sample", sample_corpus, EVAL_SET))
    return sets


class CachedEncoder:
    """``TextEncoder`` that encodes each text once: the reranker's dense part then reuses
    the vectors made at indexing (same model, same text), which keeps the run short."""

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}

    @property
    def dimensions(self) -> int:
        return self.encoder.dimensions

    def encode(self, texts: Sequence[str]) -> TextEmbeddings:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            made = self.encoder.encode(missing).vectors
            self.vectors.update(zip(missing, made, strict=True))
        return TextEmbeddings(np.stack([self.vectors[t] for t in texts]), [])


class FullText:
    """A Milvus Lite collection with the chunks' text, a BM25 function and their vectors."""

    def __init__(self, path: Path, name: str, dim: int) -> None:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        self.client = MilvusClient(str(path))
        self.name = name
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=65_535,
            enable_analyzer=True,  # Milvus's standard analyzer: words, lower case
        )
        schema.add_field("doc_id", DataType.VARCHAR, max_length=512)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index = MilvusClient.prepare_index_params()
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
        self.client.create_collection(name, schema=schema, index_params=index)

    def insert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        rows = [
            {"id": i, "text": c.text, "doc_id": c.doc_id, "vector": v.tolist()}
            for i, (c, v) in enumerate(zip(chunks, vectors, strict=True))
        ]
        for start in range(0, len(rows), 256):
            self.client.insert(self.name, rows[start : start + 256])

    def bm25(self, query: str, limit: int) -> list[dict[str, Any]]:
        hits = self.client.search(
            self.name,
            data=[query],
            anns_field="sparse",
            limit=limit,
            output_fields=["text", "doc_id"],
        )
        return [hit["entity"] for hit in hits[0]]

    def hybrid(
        self, query: str, vector: list[float], limit: int, ranker: Any
    ) -> list[dict[str, Any]]:
        from pymilvus import AnnSearchRequest

        requests = [
            AnnSearchRequest([vector], "vector", {}, limit),
            AnnSearchRequest([query], "sparse", {}, limit),
        ]
        hits = self.client.hybrid_search(
            self.name, requests, ranker, limit=limit, output_fields=["text", "doc_id"]
        )
        return [hit["entity"] for hit in hits[0]]

    def close(self) -> None:
        self.client.close()


def reranked(
    scorer: HybridScorer, query: str, texts: Sequence[str], doc_ids: Sequence[str]
) -> list[str]:
    """``doc_ids`` in the order of ``scorer``'s scores of ``texts`` (best first)."""
    if not texts:
        return []
    order = np.argsort(-scorer.score(query, texts), kind="stable")
    return [doc_ids[i] for i in order]


def rerank_method(top_k: int, weight: float) -> str:
    name = f"rerank, top_k {top_k}, dense {weight:g}"
    if top_k == CHAT_TOP_K and weight == DEFAULT_DENSE_WEIGHT:
        name += " (default pipeline)"
    return name


async def rank(
    label: str,
    documents: list[Document],
    case_sets: Sequence[Sequence[Case]],
    encoder: CachedEncoder,
    scorers: Sequence[HybridScorer],
    folder: Path,
    candidates: int,
    top_ks: Sequence[int],
) -> tuple[int, list[dict[str, list[list[str]]]]]:
    """Index ``documents`` both ways; rank every question of each set by every method.

    Returns:
        The number of chunks, and for each set the rankings of each method (one per
        question, document ids best first).
    """
    from pymilvus import RRFRanker, WeightedRanker

    default = next(s for s in scorers if s.dense_weight == DEFAULT_DENSE_WEIGHT)
    depths = sorted({*(k for k in top_ks if k < candidates), candidates})
    chunks = [chunk for document in documents for chunk in chunk_document(document)]
    vectors = encoder.encode([c.text for c in chunks]).vectors
    store = MilvusStore(
        Settings(milvus_uri=str(folder / f"{label}-dense.db"), milvus_host=None),
    )
    fulltext = FullText(folder / f"{label}-fulltext.db", "chunks", encoder.dimensions)
    results: list[dict[str, list[list[str]]]] = []
    try:
        await store.upsert(
            label, [KnowledgeRecord.of(c, v) for c, v in zip(chunks, vectors, strict=True)]
        )
        fulltext.insert(chunks, vectors)
        for cases in case_sets:
            rankings: dict[str, list[list[str]]] = {}

            def add(method: str, ranking: Sequence[str]) -> None:
                rankings.setdefault(method, []).append(list(ranking))  # noqa: B023

            for case in cases:
                query = case.question
                vector = encoder.encode([query]).vectors[0].tolist()
                dense: list[Source] = await store.search(label, vector, top_k=candidates)
                add(BASELINE, document_ranking(dense))
                for top_k in depths:
                    if top_k < candidates:
                        add(f"dense, top_k {top_k}", document_ranking(dense[:top_k]))
                add("bm25", [hit["doc_id"] for hit in fulltext.bm25(query, candidates)])
                for top_k in depths:
                    head = dense[:top_k]
                    texts, ids = [s.text for s in head], document_ranking(head)
                    for scorer in scorers:
                        add(
                            rerank_method(top_k, scorer.dense_weight),
                            reranked(scorer, query, texts, ids),
                        )
                rrf = fulltext.hybrid(query, vector, candidates, RRFRanker(RRF_K))
                add("store hybrid, RRF", [hit["doc_id"] for hit in rrf])
                weighted = fulltext.hybrid(query, vector, candidates, WeightedRanker(0.5, 0.5))
                add("store hybrid, weighted 0.5/0.5", [hit["doc_id"] for hit in weighted])
                add(
                    f"store hybrid RRF, then rerank (dense {default.dense_weight:g})",
                    reranked(default, query, [h["text"] for h in rrf], [h["doc_id"] for h in rrf]),
                )
            results.append(rankings)
    finally:
        store.close()
        fulltext.close()
    return len(chunks), results


def same_depth_baseline(method: str, methods: Collection[str]) -> str:
    """The dense ranking with as many candidates as ``method`` reorders."""
    match = re.match(r"rerank, top_k (\d+),", method)
    shallow = f"dense, top_k {match.group(1)}" if match else BASELINE
    return shallow if shallow in methods else BASELINE


def answer_in_passages(rankings: list[list[str]], cases: Sequence[Case]) -> list[float]:
    """Per question, 1.0 when a document of its highest grade is among the first
    ``top_n`` passages (what the chat puts in the prompt), else 0.0."""
    found = []
    for ranking, case in zip(rankings, cases, strict=True):
        best = max(case.relevance.values())
        hits = [case.relevance.get(doc_id, 0) == best for doc_id in ranking[:CHAT_TOP_N]]
        found.append(1.0 if any(hits) else 0.0)
    return found


def score(
    rankings: dict[str, list[list[str]]], cases: Sequence[Case], resamples: int
) -> dict[str, Any]:
    """Each method's nDCG@10 and recall@10, and its paired intervals against dense (with
    ``--candidates`` chunks, and with as many chunks as the method reorders)."""
    judgements = [case.relevance for case in cases]

    def per_question(measure: Callable[..., float], ranked: list[list[str]]) -> list[float]:
        return [measure(r, j, K) for r, j in zip(ranked, judgements, strict=True)]

    ndcgs = {method: per_question(ndcg_at_k, ranked) for method, ranked in rankings.items()}
    found = {method: answer_in_passages(ranked, cases) for method, ranked in rankings.items()}
    methods: dict[str, Any] = {}
    for method, ranked in rankings.items():
        ndcg = ndcgs[method]
        recall = per_question(recall_at_k, ranked)
        versus = paired_bootstrap(ndcg, ndcgs[BASELINE], resamples=resamples)
        same_depth = paired_bootstrap(
            ndcg, ndcgs[same_depth_baseline(method, ndcgs)], resamples=resamples
        )
        methods[method] = {
            "ndcg@10": round(float(np.mean(ndcg)), 3),
            "recall@10": round(float(np.mean(recall)), 3),
            "vs_dense": versus.as_dict(),
            "vs_dense_same_top_k": same_depth.as_dict(),
            f"answer@{CHAT_TOP_N}": round(float(np.mean(found[method])), 3),
            f"answer@{CHAT_TOP_N}_vs_dense": paired_bootstrap(
                found[method], found[BASELINE], resamples=resamples
            ).as_dict(),
            "per_question_ndcg@10": [round(x, 4) for x in ndcg],
        }
    return methods


def interval_cell(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {d['verdict']}"


def table(methods: dict[str, Any], references: bool) -> str:
    rows = []
    for method, m in methods.items():
        versus = "" if method == BASELINE else interval_cell(m["vs_dense"])
        same = (
            ""
            if same_depth_baseline(method, methods) == BASELINE
            else interval_cell(m["vs_dense_same_top_k"])
        )
        answer = m[f"answer@{CHAT_TOP_N}"]
        answer_versus = (
            "" if method == BASELINE else interval_cell(m[f"answer@{CHAT_TOP_N}_vs_dense"])
        )
        rows.append(
            [method, f"{m['ndcg@10']:.3f}", f"{m['recall@10']:.3f}", versus, same]
            + [f"{answer:.3f}", answer_versus]
            + ([REFERENCES.get(method, "")] if references else [])
        )
    headers = [
        "method",
        "nDCG@10",
        "recall@10",
        "nDCG@10 - dense [95% CI]",
        "- dense, same top_k",
        f"answer in {CHAT_TOP_N} passages",
        "- dense",
    ]
    headers += ["BEIR SciFact nDCG@10"] if references else []
    return markdown_table(headers, rows, "lrrllrll")


async def run(args: argparse.Namespace) -> None:
    encoder = CachedEncoder(TextEncoder.from_sources())
    weights = list(dict.fromkeys([DEFAULT_DENSE_WEIGHT, *args.dense_weights]))
    scorers = [HybridScorer(encoder, dense_weight=w) for w in weights]  # type: ignore[arg-type]
    sets = labelled_sets()
    by_corpus: dict[str, list[LabelledSet]] = {}
    for labelled in sets:
        by_corpus.setdefault(labelled.corpus, []).append(labelled)
    result: dict[str, Any] = {
        "bench": "retrieval",
        "k": K,
        "candidates": args.candidates,
        "chat_top_k": CHAT_TOP_K,
        "default_dense_weight": DEFAULT_DENSE_WEIGHT,
        "baseline": BASELINE,
        "bootstrap": {"resamples": args.resamples, "confidence": 0.95, "seed": 0},
        "sets": {},
    }
    texts = []
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        for label, group in by_corpus.items():
            documents = group[0].documents()
            case_sets = [g.cases[:20] if args.quick else g.cases for g in group]
            chunks, rankings = await rank(
                label,
                documents,
                case_sets,
                encoder,
                scorers,
                Path(tmp),
                args.candidates,
                args.top_ks,
            )
            for labelled, cases, ranked in zip(group, case_sets, rankings, strict=True):
                methods = score(ranked, cases, args.resamples)
                result["sets"][labelled.name] = {
                    "documents": len(documents),
                    "chunks": chunks,
                    "questions": len(cases),
                    "methods": methods,
                }
                texts.append(
                    f"{labelled.title} ({labelled.name}): {len(documents)} documents, "
                    f"{chunks} chunks, {len(cases)} questions\n\n"
                    + table(methods, references=labelled.corpus == "python_reference")
                )
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    # The printed line leaves out the per-question scores (they are in --output).
    line = json.loads(json.dumps(result))
    for labelled_set in line["sets"].values():
        for m in labelled_set["methods"].values():
            del m["per_question_ndcg@10"]
    print_result(line, "\n\n".join(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--candidates", type=int, default=50, help="chunks each method returns")
    parser.add_argument(
        "--top-ks",
        type=int,
        nargs="*",
        default=[CHAT_TOP_K],
        help="chunks the reranker reorders, beside --candidates (the chat's top_k by default)",
    )
    parser.add_argument("--quick", action="store_true", help="the first 20 questions of each set")
    parser.add_argument(
        "--dense-weights",
        type=float,
        nargs="*",
        default=[0.5, 0.7, 0.8, 0.9, 0.95],
        help="dense shares of the reranker to compare beside its default",
    )
    parser.add_argument(
        "--resamples", type=int, default=10_000, help="bootstrap resamples of each interval"
    )
    parser.add_argument("--output", type=Path, help="also write the result, per question, here")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
