import pytest

from voice_assistant.sentences import SentenceSplitter, speakable


def stream(
    pieces: list[str], max_chars: int = 300, first_clause_chars: int | None = None
) -> list[str]:
    splitter = SentenceSplitter(max_chars, first_clause_chars)
    out: list[str] = []
    for piece in pieces:
        out.extend(splitter.feed(piece))
    return out + splitter.flush()


def test_sentences_come_out_whole_and_in_order() -> None:
    pieces = ["It", " costs", " 3", ".", "5 euros", ".", " Dr", ".", " Okafor", " made it"]
    pieces += [", e.g", ". in", " teal", ". Done", "!", " Really?"]
    assert stream(pieces) == [
        "It costs 3.5 euros.",
        "Dr. Okafor made it, e.g. in teal.",
        "Done!",
        "Really?",
    ]


def test_a_sentence_is_given_as_soon_as_text_after_it_shows_its_end() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("The price is 417 euros.") == []  # "euros." might be "euros.5"
    assert splitter.feed(" It ships") == ["The price is 417 euros."]
    assert splitter.flush() == ["It ships"]
    assert splitter.flush() == []


@pytest.mark.parametrize("cut", range(1, 40))
def test_where_the_tokens_are_cut_does_not_change_the_sentences(cut: int) -> None:
    text = "Mr. Smith paid 12.50 dollars, i.e. a lot. Then he left.\n\nThe end"
    pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
    assert stream(pieces) == [
        "Mr. Smith paid 12.50 dollars, i.e. a lot.",
        "Then he left.",
        "The end",
    ]


def test_a_run_without_an_end_is_cut_at_words() -> None:
    words = ["word"] * 40
    sentences = stream([f" {w}" for w in words], max_chars=50)
    assert all(len(s) <= 50 for s in sentences)
    assert " ".join(sentences).split() == words
    with pytest.raises(ValueError, match="max_chars"):
        SentenceSplitter(0)


@pytest.mark.parametrize("cut", range(1, 30))
def test_the_first_clause_goes_early_once_it_is_long_enough(cut: int) -> None:
    text = "Yes, the ZX-41 costs 1,000 euros, and it ships in teal. Later, it was sold, twice."
    pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
    # "Yes," is too short and "1,000" is no clause end; only the first sentence is cut.
    assert stream(pieces, first_clause_chars=10) == [
        "Yes, the ZX-41 costs 1,000 euros,",
        "and it ships in teal.",
        "Later, it was sold, twice.",
    ]
    assert stream(pieces) == [
        "Yes, the ZX-41 costs 1,000 euros, and it ships in teal.",
        "Later, it was sold, twice.",
    ]


def test_the_first_clause_is_handed_out_as_soon_as_the_text_after_its_comma_starts() -> None:
    splitter = SentenceSplitter(first_clause_chars=10)
    assert splitter.feed("The ZX-41 costs 417 euros,") == []  # "euros,5" is not a clause end
    assert splitter.feed(" and") == ["The ZX-41 costs 417 euros,"]
    assert splitter.feed(" ships, in teal. It") == ["and ships, in teal."]
    assert splitter.flush() == ["It"]
    with pytest.raises(ValueError, match="first_clause_chars"):
        SentenceSplitter(first_clause_chars=0)


def test_citation_marks_are_not_spoken() -> None:
    assert speakable("It costs 417 euros [1].") == "It costs 417 euros."
    assert speakable("See [1, 2] and [3-4] too.") == "See and too."
    assert speakable(" [1]. ") == ""
    assert speakable("...") == ""
