"""Keeping an answer to its passages: the answerability check and the answer guard.

- :func:`answerability_request`: before writing an answer, the LLM is asked whether the
  passages answer the question at all (one word, yes or no). Its prompt begins with the
  answer's own system message, so an LLM with a prompt cache (the cpu profile's llama.cpp)
  evaluates the passages once for both: the check costs only its own few tokens.
- :class:`AnswerGuard`: filters the answer as it streams. A citation ``[n]`` that names no
  passage of the prompt is dropped, and an answer that starts to loop (a run of words it
  has already written) is cut there and the generation stopped.
"""

from __future__ import annotations

import re

from handler_base.inference import ChatCompletionRequest, ChatMessage

CHECK_QUESTION = (
    "{query}\n\nDo the passages above contain the answer to this question? "
    "Reply with one word: yes or no."
)
"""The answerability check's user message; ``{query}`` is the question."""
CHECK_TOKENS = 3
"""Tokens the check may write: its word, and room for a full stop."""


def answerability_request(system: ChatMessage, query: str) -> ChatCompletionRequest:
    """The check's request: the answer's system message (the passages), then the question."""
    return ChatCompletionRequest(
        messages=[system, ChatMessage(role="user", content=CHECK_QUESTION.format(query=query))],
        max_tokens=CHECK_TOKENS,
        temperature=0.0,
    )


def says_no(reply: str) -> bool:
    """Whether the check's reply is a no (anything else counts as yes: answer)."""
    words = re.findall(r"[a-z]+", reply.lower())
    return bool(words) and words[0] == "no"


_CITATION = re.compile(r"(\s*)\[(\d+(?:\s*,\s*\d+)*)\]")
_OPEN_CITATION = re.compile(r"\s*\[[\d,\s]*$|\s+$")
"""A citation that may still be growing at the end of the text so far, or the space that
may come before one (a dropped citation takes its space with it)."""
_WORD = re.compile(r"\[[\d,\s]*\]|[^\W_]+")
_SENTENCE_END = re.compile(r"[.!?:]\s|\n")

REPEAT_WORDS = 6
"""An answer that writes a run of this many words a second time is looping."""


class AnswerGuard:
    """Filters an answer as it streams: citations checked, a loop cut at its start.

    Feed the generated text piece by piece; each call returns the text that is safe to
    pass on. To catch a loop before it reaches the caller, the last few words are held
    back until the sentence they are in ends or enough words follow them. Once
    :attr:`stopped`, the generation should be stopped: nothing more is released.

    Attributes:
        stopped: The answer looped; it was cut before the repeat.
        dropped_citations: Citations removed because they named no passage.
    """

    def __init__(self, passages: int, repeat_words: int = REPEAT_WORDS) -> None:
        """Guard an answer written from ``passages`` numbered passages."""
        self._passages = passages
        self._repeat_words = repeat_words
        self._pending = ""  # an unfinished citation at the end of the text so far
        self._text = ""  # the answer so far, citations checked
        self._released = 0
        self.stopped = False
        self.dropped_citations = 0

    @property
    def text(self) -> str:
        """The whole answer so far, as it will be released."""
        return self._text

    @property
    def wordless(self) -> bool:
        """Whether the answer so far says nothing: no word, at most citations.

        Nothing is released until the first word comes, so an answer that ends wordless
        (a small model's "[1]") can be replaced whole.
        """
        return not any(
            not m.group().startswith("[") for m in _WORD.finditer(self._text + self._pending)
        )

    def feed(self, piece: str) -> str:
        """Add generated text; returns the text now safe to release."""
        if self.stopped:
            return ""
        raw = self._pending + piece
        open_citation = _OPEN_CITATION.search(raw)
        cut = open_citation.start() if open_citation else len(raw)
        self._pending = raw[cut:]
        self._text += self._checked_citations(raw[:cut])
        return self._release(final=False)

    def finish(self) -> str:
        """The text still held, once the generation has ended (nothing when wordless)."""
        if self.stopped or self.wordless:
            return ""
        self._text += self._pending  # never closed: not a citation
        self._pending = ""
        return self._release(final=True)

    def _checked_citations(self, text: str) -> str:
        def keep_valid(match: re.Match[str]) -> str:
            space, numbers = match.group(1), [int(n) for n in match.group(2).split(",")]
            valid = [n for n in numbers if 1 <= n <= self._passages]
            self.dropped_citations += len(numbers) - len(valid)
            return f"{space}[{', '.join(map(str, valid))}]" if valid else ""

        return _CITATION.sub(keep_valid, text)

    def _release(self, final: bool) -> str:
        words = [m for m in _WORD.finditer(self._text) if not m.group().startswith("[")]
        if not words:
            return ""  # held until the answer says something
        complete = words if final else words[:-1]  # the last word may still grow
        repeat = _repeat_start([w.group().lower() for w in complete], self._repeat_words)
        if repeat is not None:
            # Cut before the repeat; what a finished sentence already let out stays.
            cut = max(words[repeat].start(), self._released)
            self._text = self._text[: self._released] + self._text[self._released : cut].rstrip()
            self.stopped = True
            end = len(self._text)
        elif final:
            end = len(self._text)
        else:
            # Hold the words that could begin a repeat, unless their sentence has ended.
            held_from = len(words) - self._repeat_words
            end = words[held_from].start() if held_from >= 0 else 0
            sentence_end = max((m.end() for m in _SENTENCE_END.finditer(self._text)), default=0)
            end = max(end, sentence_end)
        end = max(end, self._released)
        released, self._released = self._text[self._released : end], end
        return released


def _repeat_start(words: list[str], size: int) -> int | None:
    """The index of the first word that begins a run of ``size`` words already written."""
    seen: set[tuple[str, ...]] = set()
    for start in range(len(words) - size + 1):
        run = tuple(words[start : start + size])
        if run in seen:
            return start
        seen.add(run)
    return None
