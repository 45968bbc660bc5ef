"""A collection's vocabulary: the names and rare terms of its documents, for the ear.

Whisper hears words it knows: the platform's own Piper voice asking "Which pier does the
ferry to Kelvington Island leave from?" is heard as "Which peer does the ferry to
Covington Island leave from?". Given the knowledge base's words as faster-whisper's
``hotwords``, it hears the question right. The voice app asks the knowledge base for
these words (``GET /chat/knowledge/collections/{name}/vocabulary``); they are gathered
here, from the chunks' texts, each time a collection changes.

The rule (:func:`extract_vocabulary`), one reading of the texts:

1. **Names**: runs of capitalised words, such as "Kelvington Island" or "Aurora X7",
   that do not start a sentence (nor a paragraph, list item, heading or table row). A
   run that starts one loses its first word, unless a name mid-sentence somewhere in
   the collection begins with that word too. Capitalised function words ("The", "For")
   and abbreviations ("Dr.") end a run; "of", "de", "van"... may join one ("Isle of
   Wight"). A one-word name that the collection also writes in lower case ("Timetable"
   in a heading) is an ordinary word, and so is a run of common words only ("Monday",
   "Saturday of March"). A run of acronyms only ("VAT", "USB-C") is left out: spoken
   letter by letter, Whisper writes them well, and as hotwords they pull other words
   towards them.
2. **Codes**: words that mix letters and digits (ZX-41, X7, mp3) or have a capital
   after their first letter (mAh, iPhone); not serial numbers (more than 6 digits).
   They count as names.
3. **Rare words**: lower-case words of at least 4 letters that are not among the
   common English words of :data:`COMMON_WORDS` (a plural or an ``-ed``/``-ing`` form of
   one is common too): "pier", "impeller", "descaling".

Pure numbers are left out (Whisper writes numbers well, and a number says nothing of
how a word sounds). Terms are counted over all the texts; the most frequent come first,
names and codes before rare words, and a name whose words a more frequent one already
holds is left out ("Kelvington" after "Kelvington Island"). Names take up to two thirds
of the terms and of the characters, rare words the rest, and either takes what the other
leaves; at most :data:`MAX_TERMS` terms of :data:`MAX_TERMS_CHARS` characters in all, so
that the hotwords prompt (about 4 characters a token for names and words, 2 for codes)
stays within Whisper's 223 prompt tokens.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from chat_handler.stores import KnowledgeStore

MAX_TERMS: Final = 60
"""Terms in a collection's vocabulary, at most."""
MAX_TERMS_CHARS: Final = 500
"""Characters of the vocabulary joined with spaces, at most: about 130 Whisper tokens for
names and words (3.9 characters a token on the answer set's), fewer than 223 (the most
Whisper's prompt holds) unless nearly all are codes like TK6-2403-00001."""
NAME_SHARE: Final = 2 / 3
"""The share of :data:`MAX_TERMS` that names and codes take before rare words."""
MIN_RARE_WORD_CHARS: Final = 4
MAX_CODE_DIGITS: Final = 6
"""Digits a code may hold; more make a serial number, left out."""
VOCABULARY_CHUNKS: Final = 4096
"""Chunks read to gather a collection's vocabulary: every chunk of a small knowledge
base, a sample of a big one (the cost of an ingest stays bounded)."""

_COMMON_WORDS_TEXT = """
    a about above across act action actually add after afternoon again against age ago
    agree ahead air all allow almost alone along already also although always am among
    amount an and animal another answer any anyone anything apart appear apply april
    are area arm around arrive art as ask at attack august autumn available average
    avoid away baby back bad bag ball bank base be bear beat beautiful became because
    become bed been before began begin behind being believe below best better between
    big bill bit black blood blue board boat body book born both bottom box boy break
    bring brother brought build building built business busy but buy by call came can
    car card care carry case cat catch cause cell center central centre century certain
    chair chance change charge check child children choice choose church city class
    clean clear close closed cold college color colour come common company complete
    condition consider contain continue control cook cool corner cost could country
    couple course court cover create cross cup current customer cut dark data date
    daughter day dead deal dear death december decide decision deep degree design detail
    develop did die difference different difficult dinner direction do doctor does dog
    done door down draw dream dress drink drive drop dry during each ear early earth
    east easy eat economy edge education effect effort eight eighteen eighty either
    eleven else end enjoy enough enter entire environment equal evening event ever every
    everyone everything exactly example expect experience explain eye face fact fail
    fall family far fast father favorite favourite fear february feel feet few field
    fifteen fifth fifty fight figure fill film final finally find fine finger finish
    fire first fish five floor fly follow food foot for force forget form former forty
    forward found four fourteen fourth free friday friend from front full fun future
    game garden gave general get girl give given glass go goal god going gone good got
    government great green ground group grow guess gun guy had hair half hall hand hang
    happen happy hard has hat have he head health hear heard heart heat heavy held help
    her here herself high him himself his history hit hold hole home hope horse hospital
    hot hotel hour house how however huge human hundred husband i idea if image imagine
    important in include including increase indeed inside instead interest into is
    issue it item its itself january job join july june just keep kept key kid kill
    kind king kitchen knew know knowledge lady land language large last late later laugh
    law lay lead learn least leave led left leg less let letter level lie life light
    like likely line list listen little live local long look lose loss lost lot love
    low machine made main major make man manage many march mark market matter may maybe
    me mean measure meet meeting member memory men method middle might mile million mind
    minute miss model moment monday money month more morning most mother mouth move
    movie mr mrs ms much music must my myself name nation national natural nature near
    nearly necessary need never new news next nice night nine nineteen ninety no none
    nor north not note nothing notice november now number object october of off offer
    office often oh oil ok okay old on once one only open or order other others our out
    outside over own page paid pain paper parent park part party pass past pay people
    per perhaps period person phone pick picture piece place plan plant play player
    please point police policy poor popular position possible power practice prepare
    present president pretty price probably problem process produce product program
    programme provide public pull purpose push put quality question quick quickly quite
    race rain raise ran rate rather reach read ready real really reason receive recent
    record red remain remember report rest result return rich ride right rise river
    road rock role room round rule run safe said sale same saturday save saw say school
    sea season seat second see seem seen sell send sense sent september serious serve
    service set seven seventeen seventy several shall she ship shop short should show
    side sign similar simple simply since sing single sister sit site situation six
    sixteen sixty size skin sleep slow small smile so social some someone something
    sometimes son song soon sorry sort sound south space speak special spend spring
    staff stage stand standard star start state station stay step still stop store story
    street strong student study stuff such summer sun sunday support sure system table
    take taken talk tax tea teach teacher team tell ten term test than thank thanks that
    the their them themselves then there these they thing think third thirteen thirty
    this those though thought thousand three through thursday thus time to today
    together told tomorrow too took top total touch toward towards town tree trip
    trouble true try tuesday turn twelve twenty two type under understand unit until up
    upon us use used user usually value very view visit voice wait walk wall want war
    warm was watch water way we wear weather wednesday week weekend weight well went were
    west what whatever when where whether which while white who whole whom whose why
    wide wife will win window winter wish with within without woman women won wonder
    word work worker world worry would write written wrong yard yeah year yellow yes yet
    you young your yourself zero
    able account address age agent already answer arrange attention bag basic bit
    brown buy cheap choose clock cloud coffee computer copy cream daily deliver dollar
    double drink easily egg electric email empty energy engine euro evening extra fair
    fast fee file floor fresh fruit gas gold hello help hey hill hold ice inch internet
    island kilo kilometer kilometre kitchen lake leave length liter litre load lunch mail
    map meal meter metre milk minute mobile modern moon mountain nose online pair pay pen
    percent plastic pound price print quarter rent repair reply request screen search
    secret seven share shirt shoe signal sky snow soft software steel stone sugar switch
    text ticket tonight train travel usual video wash website wheel wind wine wood
    affect allowed apartment arrival bath battery beach bike bought bridge button
    cable camera camp capacity caught charger claim coast code contact corner damage
    deliver delivery desk direct door drawer driver entrance exit feature fix floor
    guide handle heater instruction kit label lamp laptop lid lock lost maximum meter
    minimum mirror motor noise original outlet output input owner panel parcel path
    pet plug port power press pump quiet receipt recommend remove repair replace
    rinse route rubbish safety screw seat setting shelf shower sink socket sold speed
    spare stairs storage supply switch tank tap taught temperature tool towel tray
    upgrade valve wallet warn wire yes
"""
COMMON_WORDS: Final = frozenset(_COMMON_WORDS_TEXT.split())
"""About 1,100 common English words (function words, everyday verbs, nouns and adjectives,
numbers, days and months): words Whisper hears well without help. A word of these, or a
plain inflection of one (:func:`is_common`), is not a rare word."""

_FUNCTION_WORDS_TEXT = """
    a an the and or but nor so if then than as at by for from in into of off on onto
    out over to up with without about after before under until upon via per i me my
    we us our you your he him his she her it its they them their this that these those
    is are was were be been being am do does did have has had will would shall should
    can could may might must not no yes all any each every some what which who whom
    whose when where why how there here please note see
"""
FUNCTION_WORDS: Final = frozenset(_FUNCTION_WORDS_TEXT.split())
"""Words that end a name when capitalised ("The", "For", "Please")."""
CONNECTORS: Final = frozenset({"of", "de", "da", "del", "der", "van", "von", "la", "le", "du"})
"""Lower-case words that may join the words of a name ("Isle of Wight")."""
ABBREVIATIONS: Final = frozenset(
    {"dr", "mr", "mrs", "ms", "st", "mt", "prof", "jr", "sr", "no", "vs", "etc", "approx"}
)
"""Words whose full stop does not end a sentence ("Dr. Okafor")."""
_SUFFIXES: Final = ("ies", "es", "s", "ed", "ing", "ly", "er", "est")

_APOSTROPHES = "'\u2019"
_TOKEN = re.compile(rf"[^\W_]+(?:[{_APOSTROPHES}.\-][^\W_]+)*")
_POSSESSIVE = re.compile(rf"[{_APOSTROPHES}]s$", re.IGNORECASE)
_CODE_PARTS = re.compile(rf"[-{_APOSTROPHES}.]")
_SENTENCE_END = frozenset(".!?:")
_NUMBER_WITH_ENDING = re.compile(r"\d+[a-z]{1,3}")
_LINE_MARKERS = frozenset("-*#>|+\u2022")
"""What opens a list item, a heading, a quote or a table row at a line's start."""
_OPENERS = " \t\"'([{*#>|-\u201c\u2018\u00ab\u2022\u2013\u2014"
"""What may stand between a sentence's end and its first word: spaces, quotes, brackets,
list bullets and dashes."""


@dataclass
class _Token:
    text: str
    gap: str
    """What stands between the previous word and this one."""
    sentence_start: bool

    @property
    def capitalised(self) -> bool:
        return self.text[0].isupper()

    @property
    def lower(self) -> str:
        return self.text.lower()

    @property
    def follows_closely(self) -> bool:
        """Whether only spaces (and at most one line break) stand before this word."""
        return bool(self.gap) and not self.gap.strip() and self.gap.count("\n") <= 1


def _starts_sentence(before: str, previous: _Token | None) -> bool:
    """Whether a word after ``previous`` and then ``before`` starts a sentence or an item.

    A full stop (not an abbreviation's), a question or exclamation mark, a colon, a blank
    line, or a new line that opens a list item, heading, quote or table row does. A
    single line break inside a paragraph does not (Markdown wraps its lines).
    """
    if previous is None:
        return True
    lines = before.split("\n")
    if any(not line.strip() for line in lines[1:-1]):
        return True  # a blank line: a new paragraph
    if len(lines) > 1 and lines[-1].strip()[:1] in _LINE_MARKERS:
        return True
    punctuation = before.strip(_OPENERS + "\n")
    if punctuation.endswith("."):
        return previous.lower not in ABBREVIATIONS
    return punctuation[-1:] in _SENTENCE_END


def _tokens(text: str) -> list[_Token]:
    """The words of ``text``, each marked when it starts a sentence or a line item.

    The words of a Markdown heading count as starting one too, up to the end of the
    sentence after it: a chunk's text runs its lines together ("## Firmware Firmware
    updates are..."), so where the heading ends is not known.
    """
    tokens: list[_Token] = []
    end = 0
    heading = False
    for match in _TOKEN.finditer(text):
        word = _POSSESSIVE.sub("", match.group())
        before, end = text[end : match.start()], match.end()
        starts = _starts_sentence(before, tokens[-1] if tokens else None)
        if "#" in before:
            heading = True
        elif heading and "\n" in before:
            heading, starts = False, True  # the line after a heading's
        elif starts:
            heading = False
        tokens.append(_Token(word, before, starts or heading))
    return tokens


def is_code(word: str) -> bool:
    """Whether ``word`` is a code: letters with digits (ZX-41, mp3), or a capital inside (mAh).

    A number joined to an ordinary word ("3-year", "24-hour") or to a short lower-case
    ending ("1st", "10am", "20kg") is not a code, nor is a serial number of more than
    :data:`MAX_CODE_DIGITS` digits (TK6-2403-00001: Whisper writes digits well).
    """
    if _NUMBER_WITH_ENDING.fullmatch(word) or sum(c.isdigit() for c in word) > MAX_CODE_DIGITS:
        return False
    if any(
        any(c.isdigit() for c in part) and any(c.isalpha() for c in part)
        for part in _CODE_PARTS.split(word)
    ):
        return True
    if any(c.isdigit() for c in word) and any(c.isupper() for c in word):
        return True
    return any(c.isupper() for c in word[1:]) and any(c.islower() for c in word)


def _is_acronym(word: str) -> bool:
    """Capitals only, no digit: VAT, USB-C (spoken letter by letter)."""
    return word.isupper() and not any(c.isdigit() for c in word)


def is_common(word: str) -> bool:
    """Whether a lower-case word is a common English word, or a plain inflection of one."""
    if word in COMMON_WORDS:
        return True
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)]
            candidates = {stem, stem + "e"}
            if suffix == "ies":
                candidates.add(stem + "y")
            if stem[-1] == stem[-2]:  # "stopped", "bigger"
                candidates.add(stem[:-1])
            if candidates & COMMON_WORDS:
                return True
    return False


@dataclass
class Vocabulary:
    """What :func:`count_terms` found: names (codes included) and rare words, counted."""

    names: Counter[str] = field(default_factory=Counter)
    rare: Counter[str] = field(default_factory=Counter)
    order: dict[str, int] = field(default_factory=dict)
    """Each term's first appearance, to break ties in the order the texts give."""

    def add(self, counter: Counter[str], term: str) -> None:
        """Count ``term`` once more in ``counter`` (:attr:`names` or :attr:`rare`)."""
        counter[term] += 1
        self.order.setdefault(term, len(self.order))

    def ranked(self, counter: Counter[str]) -> list[str]:
        """The terms of ``counter``, most frequent first (first seen first on a tie)."""
        return sorted(counter, key=lambda term: (-counter[term], self.order[term]))


class _Reader:
    """Reads the words of one text into a :class:`Vocabulary`: names, then rare words."""

    def __init__(self, found: Vocabulary, capitalised: set[str], lower_case: set[str]) -> None:
        self.found = found
        self.capitalised = capitalised
        """Words that begin a name mid-sentence somewhere in the texts."""
        self.lower_case = lower_case
        """Words the texts write in lower case."""
        self.run: list[_Token] = []
        self.plain: list[_Token] = []

    def read(self, tokens: Sequence[_Token]) -> None:
        previous: _Token | None = None
        for token in tokens:
            follows_run = bool(self.run) and self.run[-1] is previous and token.follows_closely
            previous = token
            if self.name_word(token):
                if (
                    token.sentence_start
                    and not follows_run  # a heading's "Kelvington Island" goes on
                    and not (token.text in self.capitalised or is_code(token.text))
                ):
                    self._end_run()  # "Passengers board at...": an ordinary word
                    self.plain.append(token)
                    continue
                if not follows_run:
                    self._end_run()
                self.run.append(token)
            elif follows_run and token.lower in CONNECTORS:
                self.run.append(token)
            else:
                self._end_run()
                self.plain.append(token)
        self._end_run()
        for token in self.plain:
            word = token.lower
            if len(word) >= MIN_RARE_WORD_CHARS and word.isalpha() and not is_common(word):
                self.found.add(self.found.rare, word)

    @staticmethod
    def name_word(token: _Token) -> bool:
        """Whether ``token`` may be a word of a name: capitalised or a code, not a number."""
        if token.text.isdigit() or token.lower in FUNCTION_WORDS | ABBREVIATIONS:
            return False  # a number; "The", "For", "Dr": they end a name
        return token.capitalised or is_code(token.text)

    def _end_run(self) -> None:
        run = self.run
        while run and run[-1].lower in CONNECTORS:
            self.plain.append(run.pop())
        words = [t for t in run if t.lower not in CONNECTORS]
        if all(is_common(t.lower) and not is_code(t.text) for t in words):
            self.plain.extend(words)  # "Monday", "Saturday of March": Whisper knows them
            run.clear()
        elif all(_is_acronym(t.text) for t in words):
            run.clear()  # "VAT", "USB-C": spelled out, Whisper writes them well
        elif len(run) == 1 and not is_code(run[0].text):
            word = run[0]
            if word.lower in self.lower_case or len(word.text) == 1:
                self.plain.append(word)  # a heading's "Timetable", "I": ordinary words
                run.clear()
        if run:
            self.found.add(self.found.names, " ".join(t.text for t in run))
        run.clear()


def count_terms(texts: Iterable[str]) -> Vocabulary:
    """Names, codes and rare words of ``texts``, counted (see the module doc)."""
    tokenized = [_tokens(text) for text in texts]
    capitalised = {
        token.text
        for tokens in tokenized
        for previous, token in zip([None, *tokens], tokens, strict=False)
        if token.capitalised
        and not token.sentence_start
        and not (previous is not None and _Reader.name_word(previous) and token.follows_closely)
    }
    lower_case = {token.text for tokens in tokenized for token in tokens if token.text.islower()}
    found = Vocabulary()
    for tokens in tokenized:
        _Reader(found, capitalised, lower_case).read(tokens)
    return found


def select_terms(
    found: Vocabulary, max_terms: int = MAX_TERMS, max_chars: int = MAX_TERMS_CHARS
) -> list[str]:
    """The vocabulary: names first, then rare words, within the budget (module doc)."""
    names, rare = _new_words(found.ranked(found.names)), found.ranked(found.rare)
    name_quota = min(len(names), round(max_terms * NAME_SHARE))
    rare_quota = min(len(rare), max_terms - name_quota)
    chosen_names = names[: max_terms - rare_quota]
    chosen_rare = rare[:rare_quota]

    def chars(terms: list[str]) -> int:
        return sum(len(term) + 1 for term in terms)

    # Over the characters: drop the least frequent names while they hold more than their
    # share of the characters (or there are no rare words left), else rare words.
    while chars(chosen_names) + chars(chosen_rare) - 1 > max_chars:
        if chosen_names and (chars(chosen_names) > max_chars * NAME_SHARE or not chosen_rare):
            chosen_names.pop()
        else:
            chosen_rare.pop()
    return chosen_names + chosen_rare


def _new_words(names: Sequence[str]) -> list[str]:
    """``names`` less those whose words a name before them already holds.

    "Kelvington" after "Kelvington Island" adds nothing; plurals count as the same word.
    """
    seen: set[str] = set()
    kept = []
    for name in names:
        words = {word.lower().removesuffix("s") for word in name.split()}
        if not words <= seen:
            kept.append(name)
        seen |= words
    return kept


def extract_vocabulary(
    texts: Iterable[str], max_terms: int = MAX_TERMS, max_chars: int = MAX_TERMS_CHARS
) -> list[str]:
    """The names and rare terms of ``texts``, most salient first (see the module doc).

    Args:
        texts: The texts (a collection's chunks).
        max_terms: Terms at most.
        max_chars: Characters of the terms joined with spaces, at most.

    Returns:
        Names and codes by frequency, then rare words by frequency.
    """
    return select_terms(count_terms(texts), max_terms, max_chars)


def hotwords(terms: Sequence[str]) -> str | None:
    """The terms as faster-whisper's ``hotwords`` string; None when there are none."""
    return " ".join(terms) or None


async def refresh_vocabulary(store: KnowledgeStore, collection: str) -> list[str]:
    """Gather the vocabulary of ``collection`` from its chunks and keep it in the store.

    Reads up to :data:`VOCABULARY_CHUNKS` chunks. A collection that does not exist
    (any more) gets none.

    Returns:
        The terms kept.

    Raises:
        PlatformError: What the store raised.
    """
    texts = await store.texts(collection, limit=VOCABULARY_CHUNKS)
    terms = await asyncio.to_thread(extract_vocabulary, texts)  # CPU: off the event loop
    await store.set_vocabulary(collection, terms)
    return terms
