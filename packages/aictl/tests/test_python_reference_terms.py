"""The second retrieval set: its labels, and that it is written in the reference's terms."""

import re

from aictl.evaluation import RETRIEVAL_SET, corpus
from aictl.evaluation.python_reference_terms import TERMS_SET

STOP = frozenset("a an and the of to in on for is are by with as or what does do that".split())  # noqa: SIM905


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9_]+", text.lower()) if w not in STOP and len(w) > 1}


def test_every_labelled_topic_ships_with_this_python_and_each_query_has_an_answer() -> None:
    keys = {document.id for document in corpus()}
    assert len(TERMS_SET) >= 60
    assert len({case.question for case in TERMS_SET}) == len(TERMS_SET)
    for case in TERMS_SET:
        assert set(case.relevance) <= keys, case
        assert 2 in case.relevance.values(), case
        assert set(case.relevance.values()) <= {1, 2}, case


def test_the_queries_use_the_answering_topics_own_words_and_the_first_sets_do_not() -> None:
    texts = {document.id: words(document.text) for document in corpus()}

    def shared(question: str, relevance: dict[str, int]) -> float:
        asked = words(question)
        answering = set().union(*(texts[k] for k, grade in relevance.items() if grade == 2))
        return len(asked & answering) / len(asked)

    terms = [shared(c.question, c.relevance) for c in TERMS_SET]
    users = [shared(c.question, c.relevance) for c in RETRIEVAL_SET]
    # every query of this set takes most of its words from the topic that answers it
    assert min(terms) >= 0.6
    assert sum(terms) / len(terms) > sum(users) / len(users) + 0.3
    # and it asks of topics the first set leaves out
    assert {k for c in TERMS_SET for k in c.relevance} > {
        k for c in RETRIEVAL_SET for k in c.relevance
    }
