import itertools

import pytest

from handler_base.rag.chunking import chunk_text, split_sentences, split_words


def test_sentences_end_at_punctuation_and_paragraph_breaks() -> None:
    text = "First one. Second one! Third one?\n\nA heading without a period\nstill going."
    assert split_sentences(text) == [
        "First one.",
        "Second one!",
        "Third one?",
        "A heading without a period still going.",
    ]


def test_numbers_decimals_and_abbreviations_do_not_end_a_sentence() -> None:
    text = (
        "Dr. Smith measured 3.5 kg, e.g. for model II (see Fig. 2). "
        "J. R. R. Tolkien wrote it in the U.S. during 1937. Version 2.0.1 shipped."
    )
    assert split_sentences(text) == [
        "Dr. Smith measured 3.5 kg, e.g. for model II (see Fig. 2).",
        "J. R. R. Tolkien wrote it in the U.S. during 1937.",
        "Version 2.0.1 shipped.",
    ]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_sentences('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]


def test_empty_and_blank_text_give_nothing() -> None:
    assert split_sentences("") == []
    assert chunk_text("  \n\n \t ") == []


def test_chunks_hold_whole_sentences_within_the_size() -> None:
    sentences = [f"Sentence number {i} says something useful." for i in range(40)]
    chunks = chunk_text(" ".join(sentences), chunk_size=200, overlap=0)
    assert len(chunks) > 1
    assert all(len(c) <= 200 for c in chunks)
    rebuilt = [s for c in chunks for s in split_sentences(c)]
    assert rebuilt == sentences


def test_overlap_repeats_whole_sentences_from_the_previous_chunk() -> None:
    sentences = [f"Fact {i:02d} is here." for i in range(30)]  # 18 characters each
    chunks = chunk_text(" ".join(sentences), chunk_size=100, overlap=40)
    assert all(len(c) <= 100 for c in chunks)
    for previous, current in itertools.pairwise(chunks):
        carried = split_sentences(current)[:2]
        assert split_sentences(previous)[-2:] == carried
    # Every sentence is somewhere, in order.
    seen = [s for c in chunks for s in split_sentences(c)]
    assert sorted(set(seen)) == sorted(sentences)


def test_a_sentence_longer_than_the_chunk_is_split_at_word_boundaries() -> None:
    words = [f"word{i}" for i in range(100)]
    chunks = chunk_text(" ".join(words) + ".", chunk_size=50, overlap=0)
    assert all(len(c) <= 50 for c in chunks)
    assert " ".join(chunks).split() == [*words[:-1], words[-1] + "."]


def test_a_word_longer_than_the_chunk_is_cut() -> None:
    assert split_words("ab " + "x" * 25 + " cd", 10) == ["ab", "x" * 10, "x" * 10, "x" * 5 + " cd"]


def test_short_text_is_one_chunk() -> None:
    assert chunk_text("One.  Two.\nThree.") == ["One. Two. Three."]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        chunk_text("text", chunk_size=size, overlap=overlap)
