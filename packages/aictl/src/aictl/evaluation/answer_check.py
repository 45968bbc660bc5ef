"""Judging an answer without an LLM: facts, negation, refusals, citations, loops.

An answer is judged against the forms a right answer may take (its *facts*), after both
are brought to one normal form (:func:`canonical_tokens`) in which the ways people write
the same number, unit, price, time or date become the same tokens:

- numbers: digit groups joined ("5,200" and "5 200" -> ``5200``), trailing decimal zeros
  dropped ("12.50" -> ``12.5``), number words made digits ("three", "twenty-five" ->
  ``3``, ``25``; "twice" -> ``2 times``), ordinals made one form ("1st", "first" ->
  ``1st``; "first" never becomes the number ``1``, so "first year" is not "1 year");
- units: one spelling each, singular, split from the number and from a hyphen ("5200mAh",
  "5,200 mAh" -> ``5200 mah``; "3-year", "3 years", "three years" -> ``3 year``;
  "288 watt-hours" -> ``288 wh``; "Tuesdays" -> ``tuesday``;
  "litres per hour", "l/h" -> ``l per h``; "35 °C", "35 degrees" -> ``35 c``);
- money: the currency after the amount ("€1,149", "1,149 €", "EUR 1,149", "1149 euros" ->
  ``1149 eur``; "20 cents" -> ``0.2 eur``);
- times: 24-hour ``H:MM`` ("8 a.m.", "8am", "8:00", "08:00", "8 in the morning" -> ``8:00``;
  "6 p.m." -> ``18:00``; "noon" -> ``12:00``);
- dates: month first ("14 March 2025", "March 14th, 2025", "2025-03-14" ->
  ``march 14 2025``);
- contractions spelled out ("isn't" -> ``is not``, "can't" and "cannot" -> ``can not``).

A fact is stated when its tokens appear in the answer's tokens, in order and contiguous,
as whole tokens (``3 year`` is not in ``13 year``). Negation counts both ways:

- a fact that holds a negation word ("not replaced", "is not covered", "cannot be
  renewed") needs that negation: its words after the negation (the *core*, ``replaced``,
  ``be renewed``) must come with a negation word at most :data:`NEGATION_WINDOW` tokens
  before them, in the same clause. "is not replaced", "will not be replaced" state it;
  "is replaced" does not;
- a fact without one does not count where the answer negates it right there: "is not
  replaced" does not state "replaced".

A fact may also be a tuple of forms that must all be stated (``("15 March", "31 July")``).

Refusals (:func:`is_refusal`), citations (:func:`citations`), loops (:func:`is_looping`)
and the verdict on one answer (:func:`judge_answer`) follow.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Fact = str | tuple[str, ...]
"""A form a right answer takes; a tuple: forms that must all be stated."""

NEGATIONS = frozenset({"not", "no", "never", "without", "neither", "nor", "none", "nothing"})
"""Words that negate what follows them."""
NEGATION_WINDOW = 4
"""How many tokens before a fact a negation word still negates it."""
LOOP_PHRASE_WORDS = 4
"""A looping answer repeats a phrase of this many words..."""
LOOP_REPEATS = 3
"""...at least this many times."""

# --- the normal form ----------------------------------------------------------------------

_MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip
_MONTH_NAMES = {name: name for name in _MONTHS} | {
    "jan": "january", "feb": "february", "mar": "march", "apr": "april", "jun": "june",
    "jul": "july", "aug": "august", "sep": "september", "sept": "september",
    "oct": "october", "nov": "november", "dec": "december",
}  # fmt: skip
# "May" is a month only when written with a capital (otherwise it is the verb).
_MONTH = r"(?P<{name}>(?i:" + "|".join(sorted(set(_MONTH_NAMES) - {"may"}, key=len, reverse=True))
_MONTH += r")\.?|May|MAY)"
_DAY = r"(?P<{name}>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?P<{name}>(?:1[89]|2[01])\d\d))?"
_DATE_DAY_FIRST = re.compile(
    r"\b" + _DAY.format(name="d") + r"(?:\s+of)?\s+" + _MONTH.format(name="m")
    + _YEAR.format(name="y") + r"\b"
)  # fmt: skip
_DATE_MONTH_FIRST = re.compile(
    r"\b" + _MONTH.format(name="m") + r"\s+" + _DAY.format(name="d") + r"\b"
    + _YEAR.format(name="y") + r"\b"
)  # fmt: skip
_DATE_ISO = re.compile(r"\b((?:19|20)\d\d)-([01]?\d)-([0-3]?\d)\b")

_CONTRACTIONS = (
    (re.compile(r"\bcan'?t\b|\bcannot\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\b(\w+)n't\b"), r"\1 not"),
    (re.compile(r"\bn't\b"), "not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"\bi'm\b"), "i am"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
)
_DASHES = re.compile("[\u2010\u2011\u2012\u2013\u2014\u2015\u2212]")
_MINUS = re.compile(r"(?<![\w.])(?<!\d )-(?=\d)")
_TIME_12H = re.compile(
    r"\b(?P<h>[01]?\d)(?:[:.](?P<m>[0-5]\d))?\s*(?:(?P<ap>[ap])\.?\s?m\b\.?"
    r"|o'?clock\b(?P<oc>)|in the (?P<part>morning|afternoon|evening)\b|at night\b(?P<night>))"
)
_TIME_24H = re.compile(r"\b(?P<h>[0-2]?\d):(?P<m>[0-5]\d)\b")
_NOON = re.compile(r"\b(?:12\s+)?(?:noon|midday)\b")
_MIDNIGHT = re.compile(r"\b(?:12\s+)?midnight\b")
_THOUSANDS = re.compile(r"(?<=\d)[,' ](?=\d{3}(?!\d))")
_CENTS = re.compile(r"\b(\d{1,2})\s*(?:cents?|ct)\b")
_DECIMAL_ZEROS = re.compile(r"(\d\.\d*?)0+(?!\d)")
_DANGLING_POINT = re.compile(r"(\d)\.(?!\d)")
_SLASH_UNIT = re.compile(r"(?<=[a-z])\s*/\s*(?=[a-z])")
_ENERGY_UNITS = re.compile(r"\b(kilo|mega)?watt[- ]?hours?\b")
_CHARGE_UNITS = re.compile(r"\bmilliamp(?:ere)?[- ]?hours?\b")
_CLAUSE_BREAK = re.compile(r"[,;!?()\[\]\n]|\.(?!\d)|:(?!\d)|\b(?:but|however|although|though)\b")
_TOKEN = re.compile(r"\d+(?:[.:]\d+)?|[a-z]+|[%€$£]")

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_MULTIPLIERS = {"hundred": 100, "thousand": 1000}
_ORDINAL_WORDS = {
    word: f"{index}{_suffix}"
    for index, word, _suffix in (
        (1, "first", "st"), (3, "third", "rd"), (4, "fourth", "th"), (5, "fifth", "th"),
        (6, "sixth", "th"), (7, "seventh", "th"), (8, "eighth", "th"), (9, "ninth", "th"),
        (10, "tenth", "th"), (11, "eleventh", "th"), (12, "twelfth", "th"),
        (13, "thirteenth", "th"), (14, "fourteenth", "th"), (15, "fifteenth", "th"),
        (20, "twentieth", "th"), (30, "thirtieth", "th"),
    )
}  # fmt: skip
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})

_UNITS = {
    "mah": "mah", "wh": "wh", "kwh": "kwh",
    "w": "w", "watt": "w", "watts": "w", "kw": "kw", "kilowatt": "kw", "kilowatts": "kw",
    "v": "v", "volt": "v", "volts": "v",
    "kg": "kg", "kgs": "kg", "kilo": "kg", "kilos": "kg", "kilogram": "kg", "kilograms": "kg",
    "kilogramme": "kg", "kilogrammes": "kg",
    "g": "g", "gram": "g", "grams": "g", "gramme": "g", "grammes": "g",
    "l": "l", "litre": "l", "litres": "l", "liter": "l", "liters": "l", "ltr": "l",
    "ml": "ml", "millilitre": "ml", "millilitres": "ml", "milliliter": "ml",
    "milliliters": "ml",
    "m": "m", "metre": "m", "metres": "m", "meter": "m", "meters": "m",
    "cm": "cm", "centimetre": "cm", "centimetres": "cm", "centimeter": "cm",
    "centimeters": "cm",
    "mm": "mm", "millimetre": "mm", "millimetres": "mm", "millimeter": "mm",
    "millimeters": "mm",
    "km": "km", "kilometre": "km", "kilometres": "km", "kilometer": "km", "kilometers": "km",
    "inch": "inch", "inches": "inch",
    "kn": "kn", "knot": "kn", "knots": "kn",
    "bar": "bar",
    "percent": "%", "pct": "%",
    "degree": "c", "degrees": "c", "celsius": "c", "centigrade": "c",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "min": "min", "mins": "min", "minute": "min", "minutes": "min",
    "s": "s", "sec": "s", "secs": "s", "seconds": "s",
    "ms": "ms", "millisecond": "ms", "milliseconds": "ms",
    "day": "day", "days": "day", "week": "week", "weeks": "week",
    "month": "month", "months": "month", "year": "year", "years": "year", "yr": "year",
    "yrs": "year",
    "eur": "eur", "euro": "eur", "euros": "eur", "€": "eur",
    "usd": "usd", "dollar": "usd", "dollars": "usd", "$": "usd",
    "gbp": "gbp", "£": "gbp",
}  # fmt: skip
_UNITS |= {
    f"{day}days": f"{day}day" for day in ("mon", "tues", "wednes", "thurs", "fri", "satur", "sun")
}
_CURRENCIES = frozenset({"eur", "usd", "gbp"})
_CANONICAL_UNITS = frozenset(_UNITS.values())
_PER_WORDS = frozenset({"per", "a", "an", "each"})


def _date(match: re.Match[str]) -> str:
    month = _MONTH_NAMES[match.group("m").lower().rstrip(".")]
    year = match.group("y")
    return f" {month} {int(match.group('d'))}{f' {year}' if year else ''} "


def _iso_date(match: re.Match[str]) -> str:
    year, month, day = (int(part) for part in match.groups())
    if not 1 <= month <= 12:
        return match.group(0)
    return f" {_MONTHS[month - 1]} {day} {year} "


def _time_12h(match: re.Match[str]) -> str:
    hour, minute = int(match.group("h")), int(match.group("m") or 0)
    if hour > 12:
        return match.group(0)
    pm = match.group("ap") == "p" or match.group("part") in ("afternoon", "evening")
    pm = pm or (match.group("night") is not None and hour >= 6)
    if pm and hour < 12:
        hour += 12
    elif match.group("ap") == "a" and hour == 12:
        hour = 0
    return f" {hour}:{minute:02d} "


def _time_24h(match: re.Match[str]) -> str:
    hour = int(match.group("h"))
    return f"{hour}:{match.group('m')}" if hour <= 24 else match.group(0)


def _plain(text: str) -> str:
    """NFKC (no-break spaces become spaces), one hyphen for every dash, one apostrophe."""
    # "º" (an ordinal indicator) and "˚" stand in for the degree sign often; NFKC would
    # make the first an "o".
    text = text.replace("\u00ba", "\u00b0").replace("\u02da", "\u00b0")
    text = _DASHES.sub("-", unicodedata.normalize("NFKC", text))
    return text.replace("\u2018", "'").replace("\u2019", "'")


def _normal_text(text: str) -> str:
    """The string-level steps of the normal form (see the module doc)."""
    text = _plain(text).replace("\u00d7", " x ")
    text = _DATE_ISO.sub(_iso_date, text)
    text = _DATE_DAY_FIRST.sub(_date, text)
    text = _DATE_MONTH_FIRST.sub(_date, text)
    text = text.lower()
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    text = _NOON.sub(" 12:00 ", text)
    text = _MIDNIGHT.sub(" 0:00 ", text)
    text = _TIME_12H.sub(_time_12h, text)
    text = _TIME_24H.sub(_time_24h, text)
    text = _THOUSANDS.sub("", text)
    text = _CENTS.sub(lambda m: f" 0.{int(m.group(1)):02d} eur ", text)
    text = _DECIMAL_ZEROS.sub(r"\1", text)
    text = _DANGLING_POINT.sub(r"\1", text)
    text = _MINUS.sub(" minus ", text)
    text = _ENERGY_UNITS.sub(lambda m: f" {m.group(1)[0] if m.group(1) else ''}wh ", text)
    text = _CHARGE_UNITS.sub(" mah ", text)
    text = text.replace("per cent", "percent").replace("%", " % ")
    return _SLASH_UNIT.sub(" per ", text)


def _numbers_from_words(tokens: list[str]) -> list[str]:
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if not run:
            return
        total, current = 0, 0
        for word in run:
            if word in _MULTIPLIERS:
                current = max(current, 1) * _MULTIPLIERS[word]
                if _MULTIPLIERS[word] >= 1000:
                    total, current = total + current, 0
            else:
                current += _NUMBER_WORDS[word]
        out.append(str(total + current))
        run.clear()

    for token in tokens:
        if token in _NUMBER_WORDS:
            # "twenty five" is one number; "five five" (or "five twenty") two.
            if run and not (
                run[-1] in _MULTIPLIERS
                or (_NUMBER_WORDS.get(run[-1], 0) >= 20 > _NUMBER_WORDS[token])
            ):
                flush()
            run.append(token)
        elif token in _MULTIPLIERS and run:
            run.append(token)
        else:
            flush()
            if token == "twice":
                out.extend(("2", "times"))
            else:
                out.append(token)
    flush()
    return out


def _is_number(token: str) -> bool:
    return token[:1].isdigit()


def _units_and_ordinals(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for token in tokens:
        previous = out[-1] if out else ""
        if token in _ORDINAL_SUFFIXES and _is_number(previous) and previous.isdigit():
            out[-1] = f"{previous}{token}"
            continue
        if token == "second":
            out.append("s" if _is_number(previous) else "2nd")
            continue
        if token in _ORDINAL_WORDS:
            out.append(_ORDINAL_WORDS[token])
            continue
        unit = _UNITS.get(token)
        if unit is not None:
            if unit == "c" and previous == "c":
                continue  # "35 degrees celsius", "35 °C"
            out.append(unit)
            continue
        out.append(token)
    # The currency after its amount: "eur 1149" -> "1149 eur".
    for index in range(len(out) - 1):
        amount_follows = out[index] in _CURRENCIES and _is_number(out[index + 1])
        if amount_follows and not (index and _is_number(out[index - 1])):
            out[index], out[index + 1] = out[index + 1], out[index]
    result: list[str] = []
    for index, token in enumerate(out):
        previous = result[-1] if result else ""
        following = out[index + 1] if index + 1 < len(out) else ""
        if token in _PER_WORDS and previous in _CANONICAL_UNITS and following:
            result.append("per")  # "€0.20 a day", "litres an hour"
        else:
            result.append(token)
    return result


@dataclass(frozen=True)
class Tokens:
    """A text in the normal form: its tokens, and the clause each one is in."""

    words: tuple[str, ...]
    clauses: tuple[int, ...]

    def __str__(self) -> str:
        return " ".join(self.words)


def canonical_tokens(text: str) -> Tokens:
    """The normal form of a text (see the module doc)."""
    words: list[str] = []
    clauses: list[int] = []
    for clause, part in enumerate(_CLAUSE_BREAK.split(_normal_text(text))):
        tokens = _units_and_ordinals(_numbers_from_words(_TOKEN.findall(part)))
        words.extend(tokens)
        clauses.extend([clause] * len(tokens))
    return Tokens(tuple(words), tuple(clauses))


def canonical(text: str) -> str:
    """The normal form of a text as one string of tokens ("€1,149" -> ``1149 eur``)."""
    return str(canonical_tokens(text))


# --- facts --------------------------------------------------------------------------------


def _occurrences(haystack: Sequence[str], needle: Sequence[str]) -> Iterable[int]:
    n = len(needle)
    if not n:
        return
    first = needle[0]
    for start, word in enumerate(haystack):
        if word == first and tuple(haystack[start : start + n]) == tuple(needle):
            yield start


def _negated_at(answer: Tokens, start: int) -> bool:
    clause = answer.clauses[start]
    for index in range(max(start - NEGATION_WINDOW, 0), start):
        if answer.clauses[index] == clause and answer.words[index] in NEGATIONS:
            return True
    return False


def _states_form(answer: Tokens, form: str) -> bool:
    fact = canonical_tokens(form).words
    negations = [index for index, word in enumerate(fact) if word in NEGATIONS]
    needs_negation = bool(negations)
    core = fact[negations[-1] + 1 :] if negations else fact
    if not core:
        raise ValueError(f"a fact needs words after its negation: {form!r}")
    return any(
        _negated_at(answer, start) == needs_negation for start in _occurrences(answer.words, core)
    )


def states_fact(answer: str | Tokens, fact: Fact) -> bool:
    """Whether the answer states the fact (see the module doc for the rules)."""
    tokens = answer if isinstance(answer, Tokens) else canonical_tokens(answer)
    forms = (fact,) if isinstance(fact, str) else fact
    return all(_states_form(tokens, form) for form in forms)


def states_any(answer: str, facts: Iterable[Fact]) -> bool:
    """Whether the answer states one of the facts."""
    tokens = canonical_tokens(answer)
    return any(states_fact(tokens, fact) for fact in facts)


# --- refusals, citations, loops -----------------------------------------------------------

_SOURCE_WORDS = (
    r"(?:passages?|documents?|sources?|context|knowledge base|texts?|information|excerpts?"
    r"|provided|materials?|records?|data)"
)
_REFUSALS = tuple(
    re.compile(pattern)
    for pattern in (
        r"\b(?:i|we) (?:do|did|could|can|am|was) not (?:know|find|see|have|tell|say|answer|"
        r"determine|locate|provide|give|confirm|sure|able|aware)\b",
        r"\b(?:i|we) (?:have|found) (?:no|nothing)\b",
        r"\b(?:i am|i'm) (?:unable|not able|sorry)\b",
        r"\bunable to (?:find|answer|determine|locate|provide|say|tell|confirm)\b",
        r"\bno (?:information|details?|data|mention|record|answer|sources?)\b",
        r"\bnothing (?:on|about)\b",
        r"\bnot (?:mentioned|specified|stated|in the " + _SOURCE_WORDS + r")\b",
        r"\bnot (?:provided|given|included|listed|found|available|covered|contained|answered|"
        r"addressed|appear|present)\b[^.]{0,30}?\b(?:in|by|from) (?:the |these |those )?"
        + _SOURCE_WORDS,
        r"\b" + _SOURCE_WORDS + r"\b[^.]{0,60}?\b(?:do|does|did) not (?:contain|mention|say|"
        r"state|include|provide|specify|give|list|have|tell|answer|cover)\b",
        r"\b(?:can|could) not (?:be )?(?:answer|determine|determined|found|tell|say|find)\b",
        r"\bthere is no (?:way to know|indication)\b",
    )
)


def is_refusal(answer: str) -> bool:
    """Whether the answer says it does not know or did not find the answer.

    "I don't know", "I couldn't find that in the knowledge base", "The passages do not
    mention ...", "There is no information about ...", and the pipeline's answer when it
    found no passages at all ("I found no sources ...").
    """
    text = _plain(answer).lower()
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    return any(pattern.search(text) for pattern in _REFUSALS)


_CITATION = re.compile(r"\[(\s*\d+(?:\s*(?:,|;|-|and)\s*\d+)*\s*)\]")


def citations(answer: str) -> list[int]:
    """The passage numbers the answer cites: ``[2]``, ``[1, 3]``, ``[1-3]``, ``[1][2]``."""
    numbers: list[int] = []
    for match in _CITATION.finditer(_DASHES.sub("-", answer)):
        for part in re.split(r"\s*(?:,|;|and)\s*", match.group(1).strip()):
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                numbers.extend(range(low, high + 1) if low <= high else (low, high))
            else:
                numbers.append(int(part))
    return numbers


def citations_valid(answer: str, sources: int) -> bool:
    """Whether every ``[n]`` in the answer names a source that was given (1..``sources``)."""
    return all(1 <= number <= sources for number in citations(answer))


def is_looping(
    answer: str, phrase_words: int = LOOP_PHRASE_WORDS, repeats: int = LOOP_REPEATS
) -> bool:
    """Whether a phrase of ``phrase_words`` words comes ``repeats`` times or more.

    Words are compared lower case, without punctuation; repeats that overlap count once
    ("a b a b a b" holds "a b a b" once).
    """
    words = re.findall(r"[^\W_]+", answer.lower())
    last_start: dict[tuple[str, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    for start in range(len(words) - phrase_words + 1):
        phrase = tuple(words[start : start + phrase_words])
        if start - last_start.get(phrase, -phrase_words) >= phrase_words:
            last_start[phrase] = start
            counts[phrase] = counts.get(phrase, 0) + 1
            if counts[phrase] >= repeats:
                return True
    return False


# --- the verdict --------------------------------------------------------------------------

Verdict = Literal["right", "wrong", "refused", "invented"]
"""``right``: states a fact; ``wrong``: states none and does not refuse; ``refused``: says it
does not know (right for a question the documents cannot answer); ``invented``: answers a
question the documents cannot answer without refusing."""


@dataclass(frozen=True)
class Judgement:
    """The checker's findings on one answer.

    Attributes:
        verdict: See :data:`Verdict`.
        refused: The answer is a refusal (:func:`is_refusal`).
        citations: The passage numbers it cites.
        citations_valid: Each names a source that was given.
        looping: It repeats a phrase (:func:`is_looping`).
    """

    verdict: Verdict
    refused: bool
    citations: tuple[int, ...]
    citations_valid: bool
    looping: bool


def judge_answer(answer: str, sources: int, facts: Sequence[Fact] | None) -> Judgement:
    """Judge one answer.

    Args:
        answer: The answer's text.
        sources: How many sources came with it (the numbers it may cite).
        facts: The forms a right answer takes (any one); None for a question the documents
            cannot answer, where only a refusal is right.
    """
    refused = is_refusal(answer)
    verdict: Verdict
    if facts is None:
        verdict = "refused" if refused else "invented"
    elif states_any(answer, facts):
        verdict = "right"
    else:
        verdict = "refused" if refused else "wrong"
    cited = tuple(citations(answer))
    return Judgement(
        verdict=verdict,
        refused=refused,
        citations=cited,
        citations_valid=all(1 <= number <= sources for number in cited),
        looping=is_looping(answer),
    )
