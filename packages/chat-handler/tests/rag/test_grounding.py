import pytest

from chat_handler.rag.grounding import AnswerGuard, answerability_request, says_no
from handler_base.inference import ChatMessage


def guarded(pieces: list[str], passages: int = 3) -> tuple[list[str], AnswerGuard]:
    """What the guard releases for each piece (stopping where it says), then its rest."""
    guard = AnswerGuard(passages)
    released = []
    for piece in pieces:
        released.append(guard.feed(piece))
        if guard.stopped:
            break
    released.append(guard.finish())
    return released, guard


def words_of(text: str) -> list[str]:
    return [word + " " for word in text.split()]


def test_a_plain_answer_passes_whole() -> None:
    answer = "The Aurora X7 flies for 42 minutes on one charge [1]. It weighs 890 grams [2]."
    released, guard = guarded(list(answer))
    assert "".join(released) == answer == guard.text
    assert not guard.stopped
    assert guard.dropped_citations == 0


def test_a_looping_answer_is_cut_before_the_repeat() -> None:
    sentence = "The Skylark Robotics support is a Skylark drone and more. "
    released, guard = guarded(words_of(sentence * 6))
    assert guard.stopped
    assert guard.text.strip() == sentence.strip()
    assert "".join(released) == guard.text  # the repeat never reached the caller


def test_a_repeated_phrase_inside_a_sentence_is_cut_too() -> None:
    answer = "It costs one two three four five six one two three four five six one two"
    released, guard = guarded(words_of(answer))
    assert guard.stopped
    assert guard.text.strip() == "It costs one two three four five six"
    assert "".join(released) == guard.text


def test_words_that_recur_without_looping_are_kept() -> None:
    answer = (
        "The ferry leaves from pier 3 at 8 a.m. The ferry returns to pier 3 at 6 p.m. "
        "A ticket for the ferry costs 12 euros."
    )
    released, guard = guarded(words_of(answer))
    assert not guard.stopped
    assert "".join(released).strip() == answer


def test_the_text_is_released_as_sentences_end() -> None:
    guard = AnswerGuard(passages=1)
    assert guard.feed("It weighs") == ""  # held: these words could begin a repeat
    assert guard.feed(" 890 grams. It") == "It weighs 890 grams. "


@pytest.mark.parametrize(
    ("answer", "expected", "dropped"),
    [
        ("It costs 417 euros [1].", "It costs 417 euros [1].", 0),
        ("It costs 417 euros [4].", "It costs 417 euros.", 1),
        ("It costs 417 euros [1][7].", "It costs 417 euros [1].", 1),
        ("It costs 417 euros [2, 9, 3].", "It costs 417 euros [2, 3].", 1),
        ("It costs 417 euros [0] in all.", "It costs 417 euros in all.", 1),
        ("Not a citation: [see below] and [12", "Not a citation: [see below] and [12", 0),
    ],
)
def test_citations_of_no_passage_are_dropped(answer: str, expected: str, dropped: int) -> None:
    for pieces in (list(answer), [answer]):  # split anywhere, or whole
        released, guard = guarded(pieces, passages=3)
        assert "".join(released) == expected == guard.text
        assert guard.dropped_citations == dropped


def test_the_check_starts_with_the_answers_system_message() -> None:
    system = ChatMessage(role="system", content="Passages:\n[1] The ferry leaves at 8.")
    request = answerability_request(system, "When does the ferry leave?")
    assert request.messages[0] == system  # the same prefix: the prompt cache reuses it
    assert request.messages[1].role == "user"
    assert "When does the ferry leave?" in request.messages[1].content
    assert request.temperature == 0.0
    assert request.max_tokens is not None
    assert request.max_tokens <= 3


@pytest.mark.parametrize(
    ("reply", "no"),
    [
        ("No", True),
        ("no.", True),
        (" NO", True),
        ("Yes", False),
        ("yes.", False),
        ("", False),
        ("Nope", False),
        ("The passages say", False),
    ],
)
def test_only_a_no_refuses(reply: str, no: bool) -> None:
    assert says_no(reply) is no


@pytest.mark.parametrize("answer", ["[1]", "[1].", " [2] ", ""])
def test_an_answer_of_no_words_is_held_whole(answer: str) -> None:
    released, guard = guarded(list(answer))
    assert "".join(released) == ""
    assert guard.wordless


def test_an_answer_with_words_is_not_wordless() -> None:
    released, guard = guarded(list("[1] It costs 417 euros."))
    assert not guard.wordless
    assert "".join(released) == "[1] It costs 417 euros."
