"""Whole sentences out of a token stream, as soon as each one is complete.

The splitting rules are those of :func:`handler_base.rag.chunking.split_sentences`
(abbreviations such as ``Dr.`` and ``e.g.``, initials and decimals like ``3.5`` do not
end a sentence). A stream adds one question: is the text seen so far the end of a
sentence, or will the next token continue it (``3.`` then ``5``, ``Dr.`` then `` Okafor``)?
So the last sentence of the buffer is held back until text after it shows where it
ends, or the stream ends.
"""

from __future__ import annotations

import re

from handler_base.rag.chunking import split_sentences, split_words

DEFAULT_MAX_SENTENCE_CHARS = 300
"""A "sentence" with no end in sight is spoken in pieces of at most this many characters."""

_CLAUSE_END = re.compile(r"[,;:](?=\s)")
_CITATION = re.compile(r"\s*\[\d+(?:\s*[,;-]\s*\d+)*\]")
_SPEAKABLE = re.compile(r"\w")


class SentenceSplitter:
    """Feed it text pieces; it hands back each sentence once it is complete.

    Example:
        >>> splitter = SentenceSplitter()
        >>> splitter.feed("It costs 3.")
        []
        >>> splitter.feed("5 euros. Dr. Okafor made")
        ['It costs 3.5 euros.']
        >>> splitter.feed(" it.")
        []
        >>> splitter.flush()
        ['Dr. Okafor made it.']
    """

    def __init__(
        self, max_chars: int = DEFAULT_MAX_SENTENCE_CHARS, first_clause_chars: int | None = None
    ) -> None:
        """Make an empty splitter.

        Args:
            max_chars: Longest sentence held back; a longer run without a sentence end
                is cut at word boundaries (TTS should not wait for ever).
            first_clause_chars: When set, the first sentence is handed out early: cut
                after the first comma, semicolon or colon (followed by a space) that
                ends at least this many characters in. Later sentences stay whole.
        """
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        if first_clause_chars is not None and first_clause_chars < 1:
            raise ValueError(f"first_clause_chars must be at least 1, got {first_clause_chars}")
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self._buffer = ""
        self._handed_out = False

    def feed(self, piece: str) -> list[str]:
        """Add the next piece of text; return the sentences it completed, in order."""
        self._buffer += piece
        sentences = split_sentences(self._buffer)
        if not sentences:
            # Only whitespace so far: keep a paragraph break, it may end a sentence.
            return []
        *complete, last = sentences
        if len(last) > self.max_chars:
            *long_complete, last = split_words(last, self.max_chars)
            complete.extend(long_complete)
        if not self._handed_out and self.first_clause_chars is not None:
            first = complete[0] if complete else last
            clause = next(
                (m for m in _CLAUSE_END.finditer(first) if m.end() >= self.first_clause_chars),
                None,
            )
            if clause is not None:
                head, rest = first[: clause.end()], first[clause.end() :].lstrip()
                if complete:
                    complete[:1] = [head, rest]
                else:
                    complete, last = [head], rest
        trailing = self._buffer[len(self._buffer.rstrip()) :]
        self._buffer = last + trailing
        self._handed_out = self._handed_out or bool(complete)
        return complete

    def flush(self) -> list[str]:
        """The sentences still held (the end of the stream); the splitter is empty after."""
        sentences = split_sentences(self._buffer)
        self._buffer = ""
        self._handed_out = self._handed_out or bool(sentences)
        return sentences


def speakable(sentence: str) -> str:
    """The sentence as it should be spoken: citation marks such as ``[1]`` dropped.

    Returns:
        The text to speak; empty when nothing in it can be spoken (only marks or
        punctuation).
    """
    text = " ".join(_CITATION.sub("", sentence).split())
    return text if _SPEAKABLE.search(text) else ""
