"""Sentence splitting and chunking by size and overlap that never cuts a sentence.

Sizes are in characters. A chunk holds whole sentences, packed until the next one would
pass ``chunk_size``; the next chunk starts with the last whole sentences of the previous
one that fit in ``overlap`` characters. Only a sentence longer than ``chunk_size`` is
split, and then at word boundaries (a single word longer than ``chunk_size`` is cut).
"""

from __future__ import annotations

import re

DEFAULT_CHUNK_SIZE = 800
"""Characters per chunk at most: about 200 tokens, a few sentences of context."""
DEFAULT_CHUNK_OVERLAP = 100
"""Characters of whole sentences repeated from the end of the previous chunk, at most."""

ABBREVIATIONS = frozenset(
    {
        "e.g.", "i.e.", "etc.", "vs.", "cf.", "al.", "approx.", "ca.", "nos.",
        "fig.", "figs.", "eq.", "vol.", "pp.", "p.", "ch.", "dept.",
        "mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "mt.", "gen.",
        "lt.", "sgt.", "capt.", "rev.", "hon.", "inc.", "ltd.", "co.", "corp.", "jan.",
        "feb.", "apr.", "jun.", "jul.", "aug.", "sep.", "sept.", "oct.", "nov.",
        "dec.", "u.s.", "u.k.", "a.m.", "p.m.",
    }
)  # fmt: skip
"""Lowercase words ending in a period that do not end a sentence."""

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# End punctuation, closing quotes or brackets, then whitespace: a possible sentence end.
# "3.5" never matches (no whitespace after the period).
_SENTENCE_END = re.compile("[.!?\u2026]+[\"'\u201d\u2019)\\]]*\\s+")
_INITIAL = re.compile(r"(?:[A-Za-z]\.)+")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, stripped, without empty ones.

    A paragraph break (a blank line) always ends a sentence. A period does not when it
    ends a common abbreviation (``e.g.``, ``Dr.``, see :data:`ABBREVIATIONS`) or an
    initial (``J. Smith``, ``U.N.``); decimals like ``3.5`` are never split.

    Args:
        text: Any text.

    Returns:
        The sentences in order.
    """
    sentences: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            candidate = paragraph[start : match.end()].strip()
            if _ends_in_abbreviation(candidate):
                continue
            if candidate:
                sentences.append(" ".join(candidate.split()))
            start = match.end()
        rest = paragraph[start:].strip()
        if rest:
            sentences.append(" ".join(rest.split()))
    return sentences


def _ends_in_abbreviation(candidate: str) -> bool:
    words = candidate.rsplit(None, 1)
    last = words[-1] if words else ""
    if not last.endswith("."):
        return False
    word = last.lstrip("(\"'\u201c\u2018[").lower()
    return word in ABBREVIATIONS or _INITIAL.fullmatch(word) is not None


def split_words(text: str, size: int) -> list[str]:
    """Split ``text`` into pieces of at most ``size`` characters at word boundaries.

    A word longer than ``size`` is cut into ``size``-character pieces.
    """
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:size])
            word = word[size:]
        if not word:
            continue
        if current and len(current) + 1 + len(word) > size:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces


def chunk_text(
    text: str, chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP
) -> list[str]:
    """Cut ``text`` into chunks of whole sentences (see the module doc).

    Args:
        text: The text; whitespace inside sentences is collapsed to single spaces.
        chunk_size: Characters per chunk at most (at least 1).
        overlap: Characters of whole sentences carried into the next chunk at most;
            0 for none. Must be below ``chunk_size``.

    Returns:
        The chunks in order; none for a text that is only whitespace.

    Raises:
        ValueError: ``chunk_size`` below 1, or ``overlap`` negative or not below
            ``chunk_size``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must be in [0, chunk_size), got {overlap}")
    units: list[str] = []
    for sentence in split_sentences(text):
        units.extend(
            [sentence] if len(sentence) <= chunk_size else split_words(sentence, chunk_size)
        )

    chunks: list[str] = []
    current: list[str] = []
    for unit in units:
        if current and _joined_length([*current, unit]) > chunk_size:
            chunks.append(" ".join(current))
            current = _tail(current, overlap)
            while current and _joined_length([*current, unit]) > chunk_size:
                current.pop(0)
        current.append(unit)
    if current:
        chunks.append(" ".join(current))
    return chunks


def _joined_length(parts: list[str]) -> int:
    return sum(len(p) for p in parts) + max(len(parts) - 1, 0)


def _tail(parts: list[str], limit: int) -> list[str]:
    """The last whole parts whose joined length is at most ``limit``."""
    tail: list[str] = []
    for part in reversed(parts):
        if _joined_length([part, *tail]) > limit:
            break
        tail.insert(0, part)
    return tail
