"""Retrieval quality: nDCG@10 and recall@10 of dense, BM25, the hybrid reranker, store hybrid.

Two labelled sets (:mod:`aictl.evaluation`): the Python language reference that ships
with CPython (79 topics, 60 questions written and labelled by hand, graded relevance)
and the sample knowledge base that ``aictl up`` ingests (3 documents, 12 questions).
Documents are chunked as ingest chunks them (``chunk_document``, 800/100 characters) and
embedded with all-MiniLM-L6-v2 (int8 ONNX), the embeddings app's model, called here in
process (``TextEncoder``, the class the app runs) rather than through Serve: quality does
not depend on the transport. Scores are per document: a document's rank is the rank of
its best chunk.

Methods, each over the top ``--candidates`` chunks (50; the chat route's ``top_k`` is 10
by default, 100 at most):

* ``dense``: cosine search in Milvus Lite through the chat handler's ``MilvusStore``;
* ``bm25``: Milvus Lite full-text search (a BM25 function over the whole corpus, the
  ``standard`` analyzer: words in lower case, no stemming, no stop words; Milvus Lite
  3.2 knows no ``english`` analyzer), in a collection of its own;
* ``rerank``: the chat pipeline: dense candidates reordered by the reranker's
  ``HybridScorer`` (its BM25 is over the candidates only, fused 50/50 with the cosine);
  once with the chat route's default ``top_k`` of 10, once with ``--candidates``;
* ``store hybrid``: Milvus ``hybrid_search`` of the dense and the BM25 field of that same
  collection, fused by reciprocal rank (RRF, k=60) or by Milvus's weighted ranker (0.5
  each), and the RRF list reranked by ``HybridScorer``.

It measures quality only (no timings), which load does not change, so it needs no quiet
machine: ``nice .venv/bin/python bench/retrieval.py``; ``--quick``: the first 20 questions
of the reference set.
"""

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _common import markdown_table, print_result
from aictl.evaluation import (
    EVAL_SET,
    RETRIEVAL_SET,
    corpus,
    document_ranking,
    score_rankings,
)
from aictl.local import sample_documents
from chat_handler.stores import KnowledgeRecord, MilvusStore
from handler_base.knowledge import KnowledgeDocument
from handler_base.messages import Source
from handler_base.rag.documents import Chunk, Document, chunk_document
from handler_base.settings import Settings
from ray_inference.reranker import HybridScorer
from ray_inference.text_encoder import TextEmbeddings, TextEncoder

K = 10
RRF_K = 60
REFERENCES = {
    "dense": "0.645 (all-MiniLM-L6-v2)",
    "bm25": "0.679 (BM25)",
}
"""BEIR SciFact nDCG@10 (a different data set: scientific claims), as issue 15 states."""


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


async def evaluate(
    label: str,
    documents: list[Document],
    cases: Sequence[Any],
    encoder: CachedEncoder,
    scorer: HybridScorer,
    folder: Path,
    candidates: int,
    other_scorers: Sequence[HybridScorer] = (),
) -> dict[str, Any]:
    """Index ``documents`` both ways, rank every question by every method, score them."""
    from pymilvus import RRFRanker, WeightedRanker

    chunks = [chunk for document in documents for chunk in chunk_document(document)]
    vectors = encoder.encode([c.text for c in chunks]).vectors
    store = MilvusStore(
        Settings(milvus_uri=str(folder / f"{label}-dense.db"), milvus_host=None),
    )
    fulltext = FullText(folder / f"{label}-fulltext.db", "chunks", encoder.dimensions)
    try:
        await store.upsert(
            label, [KnowledgeRecord.of(c, v) for c, v in zip(chunks, vectors, strict=True)]
        )
        fulltext.insert(chunks, vectors)
        rankings: dict[str, list[list[str]]] = {}

        def add(method: str, ranking: Sequence[str]) -> None:
            rankings.setdefault(method, []).append(list(ranking))

        for case in cases:
            query = case.question
            vector = encoder.encode([query]).vectors[0].tolist()
            dense: list[Source] = await store.search(label, vector, top_k=candidates)
            add("dense", document_ranking(dense))
            add("bm25", [hit["doc_id"] for hit in fulltext.bm25(query, candidates)])
            for top_k, method in (
                (10, "rerank, top_k 10 (chat default)"),
                (candidates, f"rerank, top_k {candidates}"),
            ):
                head = dense[:top_k]
                add(method, reranked(scorer, query, [s.text for s in head], document_ranking(head)))
                for other in other_scorers:
                    add(
                        f"{method}, dense weight {other.dense_weight}",
                        reranked(other, query, [s.text for s in head], document_ranking(head)),
                    )
            rrf = fulltext.hybrid(query, vector, candidates, RRFRanker(RRF_K))
            add("store hybrid, RRF", [hit["doc_id"] for hit in rrf])
            weighted = fulltext.hybrid(query, vector, candidates, WeightedRanker(0.5, 0.5))
            add("store hybrid, weighted 0.5/0.5", [hit["doc_id"] for hit in weighted])
            add(
                "store hybrid RRF, then rerank",
                reranked(scorer, query, [h["text"] for h in rrf], [h["doc_id"] for h in rrf]),
            )
    finally:
        store.close()
        fulltext.close()
    judgements = [case.relevance for case in cases]
    methods = {}
    for method, ranked in rankings.items():
        scores = score_rankings(ranked, judgements, K)
        methods[method] = {"ndcg@10": round(scores.ndcg, 3), "recall@10": round(scores.recall, 3)}
        # Halves (questions 1, 3, 5... and 2, 4, 6...): pick a setting on one, read it on
        # the other, so a weight is not chosen on the questions that report it.
        for half, start in (("odd", 0), ("even", 1)):
            part = score_rankings(ranked[start::2], judgements[start::2], K)
            methods[method][f"ndcg@10 {half}"] = round(part.ndcg, 3)
    return {
        "documents": len(documents),
        "chunks": len(chunks),
        "questions": len(cases),
        "methods": methods,
    }


def table(result: dict[str, Any], references: bool) -> str:
    rows = [
        [method, f"{m['ndcg@10']:.3f}", f"{m['recall@10']:.3f}"]
        + [f"{m['ndcg@10 odd']:.3f}", f"{m['ndcg@10 even']:.3f}"]
        + ([REFERENCES.get(method, "")] if references else [])
        for method, m in result["methods"].items()
    ]
    headers = ["method", "nDCG@10", "recall@10", "nDCG@10 odd questions", "even"]
    headers += ["BEIR SciFact nDCG@10"] if references else []
    return markdown_table(headers, rows, "lrrrrl")


async def run(args: argparse.Namespace) -> None:
    encoder = CachedEncoder(TextEncoder.from_sources())
    scorer = HybridScorer(encoder)  # type: ignore[arg-type]
    reference_cases = RETRIEVAL_SET[:20] if args.quick else RETRIEVAL_SET
    sample = [KnowledgeDocument.model_validate(d).to_document() for d in sample_documents()]
    with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as tmp:
        folder = Path(tmp)
        others = [
            HybridScorer(encoder, dense_weight=w)  # type: ignore[arg-type]
            for w in args.dense_weights
        ]
        python_reference = await evaluate(
            "python_reference",
            corpus(),
            reference_cases,
            encoder,
            scorer,
            folder,
            args.candidates,
            others,
        )
        sample_kb = await evaluate(
            "sample", sample, EVAL_SET, encoder, scorer, folder, args.candidates
        )
    result = {
        "bench": "retrieval",
        "k": K,
        "candidates": args.candidates,
        "python_reference": python_reference,
        "sample": sample_kb,
    }
    text = "\n\n".join(
        [
            f"Python language reference: {python_reference['documents']} documents, "
            f"{python_reference['chunks']} chunks, {python_reference['questions']} questions",
            table(python_reference, references=True),
            f"Sample knowledge base: {sample_kb['documents']} documents, "
            f"{sample_kb['chunks']} chunks, {sample_kb['questions']} questions",
            table(sample_kb, references=False),
        ]
    )
    print_result(result, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--candidates", type=int, default=50, help="chunks each method returns")
    parser.add_argument("--quick", action="store_true", help="the first 20 reference questions")
    parser.add_argument(
        "--dense-weights",
        type=float,
        nargs="*",
        default=[0.7, 0.8, 0.9],
        help="other dense shares of the reranker to compare with its default (0.5)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
