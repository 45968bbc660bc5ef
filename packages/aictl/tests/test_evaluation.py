"""The quality metrics on small cases worked out by hand, and the labelled set's labels
checked against the sample documents themselves."""

from importlib import resources

import pytest

from aictl.evaluation import (
    EVAL_SET,
    RETRIEVAL_SET,
    answer_contains,
    corpus,
    document_ranking,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    score_rankings,
)
from handler_base.messages import Source


def test_ndcg_graded_by_hand() -> None:
    # DCG = 0/log2(2) + 1/log2(3) + 2/log2(4) = 0.63093 + 1.0 = 1.63093
    # ideal  = 2/log2(2) + 1/log2(3)           = 2.0 + 0.63093 = 2.63093
    assert ndcg_at_k(["d3", "d1", "d2"], {"d1": 1, "d2": 2}) == pytest.approx(0.61990, abs=1e-5)


def test_ndcg_perfect_missing_and_cut() -> None:
    assert ndcg_at_k(["a", "b"], {"a": 1}) == 1.0
    assert ndcg_at_k(["b", "c"], {"a": 1}) == 0.0
    # the relevant document at rank 2 only: 1/log2(3)
    assert ndcg_at_k(["b", "a"], {"a": 1}) == pytest.approx(0.63093, abs=1e-5)
    # beyond the cut it does not count
    assert ndcg_at_k(["b", "c", "a"], {"a": 1}, k=2) == 0.0
    assert ndcg_at_k(["a"], {}) == 0.0


def test_recall_by_hand() -> None:
    assert recall_at_k(["d3", "d1", "d2"], {"d1": 1, "d2": 2}, k=2) == 0.5
    assert recall_at_k(["d3", "d1", "d2"], {"d1": 1, "d2": 2, "d9": 0}, k=3) == 1.0


def test_a_document_counts_at_its_first_chunk_only() -> None:
    # chunks of d1 twice: the first two documents are d1 and d2
    assert recall_at_k(["d1", "d1", "d2"], {"d2": 1}, k=2) == 1.0
    # d1's second chunk does not take rank 2: DCG = 1 + 1/log2(3), ideal the same
    assert ndcg_at_k(["d1", "d1", "d2"], {"d1": 1, "d2": 1}) == pytest.approx(1.0)


def test_answer_rule() -> None:
    assert normalize_answer("It costs 1,149 Euros.") == "it costs 1149 euros"
    assert answer_contains("The battery holds 5 200 mAh.", ["5200 mAh"])
    assert answer_contains("A warranty of 3 years.", ["3 years"])
    assert not answer_contains("A warranty of 13 years.", ["3 years"])
    assert not answer_contains("It flies for a long time.", ["42 minutes"])


def test_each_fact_is_in_its_relevant_document() -> None:
    sample = resources.files("aictl") / "sample"
    texts = {f"sample/{entry.name}": entry.read_text() for entry in sample.iterdir()}
    for case in EVAL_SET:
        assert case.relevant_doc in texts, case
        assert answer_contains(texts[case.relevant_doc], case.facts[:1]), case
        others = [text for doc_id, text in texts.items() if doc_id != case.relevant_doc]
        assert not any(answer_contains(text, case.facts) for text in others), case


def test_every_labelled_topic_ships_with_this_python_and_each_question_has_an_answer() -> None:
    keys = {document.id for document in corpus()}
    assert len(RETRIEVAL_SET) >= 40
    assert len({case.question for case in RETRIEVAL_SET}) == len(RETRIEVAL_SET)
    for case in RETRIEVAL_SET:
        assert set(case.relevance) <= keys, case
        assert 2 in case.relevance.values(), case
        assert set(case.relevance.values()) <= {1, 2}, case


def test_the_corpus_is_the_reference_as_python_ships_it() -> None:
    from pydoc_data.topics import topics

    documents = {document.id: document for document in corpus()}
    assert documents.keys() == topics.keys()
    assert documents["if"].text == topics["if"]
    assert documents["if"].title == 'The "if" statement'
    assert documents["if"].metadata == {"title": 'The "if" statement', "topic": "if"}


def test_scores_are_the_means_over_the_questions() -> None:
    scores = score_rankings([["a", "b"], ["c", "a"]], [{"a": 1}, {"a": 1}], k=10)
    # nDCG: (1 + 1/log2(3)) / 2; recall: (1 + 1) / 2
    assert scores.ndcg == pytest.approx((1 + 0.63093) / 2, abs=1e-5)
    assert scores.recall == 1.0
    assert scores.n == 2
    with pytest.raises(ValueError, match="1 rankings for 0 questions"):
        score_rankings([["a"]], [])


def test_the_ranking_of_search_results_is_their_documents_in_order() -> None:
    sources = [
        Source(id=str(i), text="t", score=1.0, metadata={"doc_id": doc})
        for i, doc in enumerate(["b", "a", "b"])
    ]
    assert document_ranking(sources) == ["b", "a", "b"]
