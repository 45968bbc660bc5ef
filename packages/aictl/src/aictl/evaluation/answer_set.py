"""The answer set: ten documents with distractors, and the questions asked of them.

The documents (``aictl/evaluation/answers/*.md``, 2,400 to 3,000 characters each, so
four chunks each at the chat's 800 characters) are invented but realistic, with no real
brand: two power stations of one maker with different prices, weights, capacities and
warranties, that maker's warranty policy and a recall notice that applies to some serial
numbers of one model and not to others, a submersible pump manual that also lists its
smaller sibling, a ferry timetable with two routes from two piers, summer and winter
times and many fares, a walking guide to the island the ferry serves, a library's lending
rules, an espresso machine's user guide and a block of flats' house rules. Numbers, dates
and times recur across them on purpose (25 seconds and 25 to 30 seconds; 5 working days
and 10; 30 September with and without a year; 9:00 to 17:00 and 8 a.m. to 6 p.m.).

How the questions were written: by hand, after the documents, each for one fact stated in
one document (its ``relevant_doc``); the first accepted form of each fact is the
document's own wording (``tests/test_answer_set.py`` checks that it is there), the others
are the ways an answer may put it. Three kinds:

- :data:`FACT_QUESTIONS` (61): one fact each; many have a distractor in the same or
  another document. Several need a negation ("Is the Trek 300 affected by the recall?"
  -> "not affected").
- :data:`FOLLOW_UPS` (10): a question that needs the conversation before it ("And how
  much does it weigh?"), with that conversation (one user question and the assistant's
  answer) and the standalone form of the question. The subject the question leaves out
  is recorded too: it is in the history and the standalone form, not in the question.
- :data:`UNANSWERABLE` (10): plausible questions on the documents' topics that none of
  them answers (the ferry's wifi password, the captain's name). Each names its topic
  document and the words an answer would have to use, which appear in no document;
  several have a tempting near miss (free wifi on board, the cliff's height above the
  sea next to the lighthouse, the wind limit in knots next to the ferry's speed).

The set is made differently from the sample's 12 questions (one short document per
product): long documents, distractors, follow-ups and questions without an answer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from aictl.evaluation.answer_check import Fact
from handler_base.rag.documents import Document, markdown_title

ANSWERS_COLLECTION = "eval_answers"
"""The collection ``aictl eval`` ingests the answer set's documents into."""
SET_HASH_KEY = "answer_set"
"""Chunk metadata: the hash of the set's documents that the chunk was ingested from."""

TREK_300 = "answers/ambervolt-trek-300.md"
TREK_600 = "answers/ambervolt-trek-600.md"
RECALL = "answers/ambervolt-trek-600-recall.md"
WARRANTY = "answers/ambervolt-warranty-service.md"
PUMP = "answers/quellmark-sp40-pump-manual.md"
FERRY = "answers/harwick-sound-ferry-timetable.md"
COAST = "answers/kelvington-coastal-path.md"
LIBRARY = "answers/harwick-town-library.md"
ESPRESSO = "answers/verane-duo-espresso-manual.md"
FLATS = "answers/lindqvist-court-residents-handbook.md"

Kind = Literal["fact", "follow_up", "unanswerable"]


@dataclass(frozen=True)
class FactQuestion:
    """A question one document answers, and the forms a right answer takes (any one)."""

    question: str
    relevant_doc: str
    facts: tuple[Fact, ...]
    kind: Kind = "fact"


@dataclass(frozen=True)
class FollowUp:
    """A question that needs the conversation before it.

    Attributes:
        question: As the user asks it, leaving out what it is about.
        history: The user's previous question and the assistant's answer.
        standalone: The same question on its own (what a rewrite should produce).
        subject: What the question leaves out: in the history and the standalone form.
        relevant_doc: The document that answers it.
        facts: The forms a right answer takes (any one).
    """

    question: str
    history: tuple[str, str]
    standalone: str
    subject: str
    relevant_doc: str
    facts: tuple[Fact, ...]
    kind: Kind = "follow_up"

    def history_messages(self) -> list[dict[str, str]]:
        """The history as ChatRequest ``history`` messages."""
        user, assistant = self.history
        return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


@dataclass(frozen=True)
class Unanswerable:
    """A question on a document's topic that no document answers.

    Attributes:
        question: The question.
        topic_doc: The document on its topic (what retrieval is likely to bring).
        topic: Words of the question that the topic document holds.
        absent: Words an answer would have to use; no document holds them.
    """

    question: str
    topic_doc: str
    topic: tuple[str, ...]
    absent: tuple[str, ...]
    kind: Kind = "unanswerable"


AnswerCase = FactQuestion | FollowUp | Unanswerable

_NOT_AFFECTED = (
    "not affected",
    "unaffected",
    "not part of the recall",
    "not included in the recall",
)

FACT_QUESTIONS: tuple[FactQuestion, ...] = (
    # the two power stations: similar products, different figures
    FactQuestion("How much does the Ambervolt Trek 300 cost?", TREK_300, ("€449",)),
    FactQuestion(
        "What is the battery capacity of the Trek 300 in watt-hours?", TREK_300, ("288 Wh",)
    ),
    FactQuestion(
        "How long does the Trek 300 take to charge fully from a wall socket?",
        TREK_300,
        ("2 hours", "120 minutes"),
    ),
    FactQuestion(
        "Is the solar charging cable included with the Trek 300?",
        TREK_300,
        ("not included", "sold separately", "does not include", "not come with"),
    ),
    FactQuestion(
        "How much power can the Trek 300's AC outlets deliver continuously?",
        TREK_300,
        ("300 W",),
    ),
    FactQuestion(
        "How much does the Ambervolt Trek 600 cost on its own, without the solar panel?",
        TREK_600,
        ("€849",),
    ),
    FactQuestion("What is the price of the Trek 600 Solar Bundle?", TREK_600, ("€1,149",)),
    FactQuestion("How much does the Ambervolt Trek 600 weigh?", TREK_600, ("7.9 kg",)),
    FactQuestion(
        "What is the capacity of the Trek 600's battery in mAh?", TREK_600, ("180,000 mAh",)
    ),
    FactQuestion(
        "How quickly does the Trek 600 switch to its battery when the mains power fails?",
        TREK_600,
        ("20 milliseconds",),
    ),
    FactQuestion(
        "How many charge cycles is the Trek 600's battery rated for?", TREK_600, ("3,500",)
    ),
    # the recall: some serial numbers and not others
    FactQuestion(
        "Which serial numbers of the Trek 600 are affected by the recall?",
        RECALL,
        (("TK6-2403-00001", "TK6-2403-05200"),),
    ),
    FactQuestion(
        "Is a Trek 600 with the serial number TK6-2404-00310 affected by the recall?",
        RECALL,
        _NOT_AFFECTED,
    ),
    FactQuestion("Is the Ambervolt Trek 300 affected by the recall?", RECALL, _NOT_AFFECTED),
    FactQuestion(
        "How long does the recall repair of a Trek 600 take?", RECALL, ("5 working days",)
    ),
    FactQuestion(
        "What is the phone number of the Ambervolt recall hotline?",
        RECALL,
        ("0800 555 0148", "0800-555-0148"),
    ),
    FactQuestion("When was the Trek 600 recall notice published?", RECALL, ("12 June 2024",)),
    FactQuestion(
        "What does an owner who registers an affected Trek 600 receive as an apology?",
        RECALL,
        ("€50",),
    ),
    FactQuestion(
        "Where is the serial number printed on a Trek 600?",
        RECALL,
        ("under the left fold-down handle", "left handle"),
    ),
    # the warranty policy
    FactQuestion(
        "How long is the Ambervolt warranty on accessories such as cables and solar panels?",
        WARRANTY,
        ("1 year",),
    ),
    FactQuestion(
        "When is the Ambervolt service desk open on Saturdays?",
        WARRANTY,
        (("9 a.m.", "1 p.m."),),
    ),
    FactQuestion(
        "At what time does the Ambervolt service desk open on weekdays?", WARRANTY, ("8 a.m.",)
    ),
    FactQuestion(
        "Below what share of its rated capacity does a Trek battery count as faulty under "
        "warranty?",
        WARRANTY,
        ("70%",),
    ),
    FactQuestion(
        "Will Ambervolt replace a Trek battery under warranty if it still holds 75% of its "
        "capacity?",
        WARRANTY,
        ("not replaced", "will not replace", "does not replace", "not eligible", "not faulty"),
    ),
    FactQuestion(
        "How long does an Ambervolt warranty repair take?", WARRANTY, ("10 working days",)
    ),
    FactQuestion(
        "What is Ambervolt's inspection fee for a repair outside the warranty?",
        WARRANTY,
        ("€35",),
    ),
    FactQuestion(
        "How much does a new battery module for the Trek 600 cost outside the warranty?",
        WARRANTY,
        ("€319",),
    ),
    FactQuestion("When are Ambervolt firmware updates published?", WARRANTY, ("first Thursday",)),
    # the pump manual, with its smaller sibling in the same table
    FactQuestion(
        "What is the maximum flow rate of the Quellmark SP-40 pump?",
        PUMP,
        ("9,000 litres per hour",),
    ),
    FactQuestion("How high can the Quellmark SP-40 lift water?", PUMP, ("8 m",)),
    FactQuestion("How deep can the SP-40 pump be submerged?", PUMP, ("7 m",)),
    FactQuestion("What is the part number of the SP-40's float switch?", PUMP, ("SP40-FS-02",)),
    FactQuestion(
        "At what water level does the SP-40's float switch turn the pump on?", PUMP, ("50 cm",)
    ),
    FactQuestion(
        "Is the impeller covered by the SP-40's warranty?",
        PUMP,
        ("not covered", "is excluded", "wearing part", "does not cover"),
    ),
    FactQuestion("How much does the Quellmark SP-25 weigh?", PUMP, ("3.4 kg",)),
    FactQuestion("What is the hottest water the SP-40 may pump?", PUMP, ("35 °C",)),
    # the ferry timetable: two routes, two piers, summer and winter
    FactQuestion("Which pier does the ferry to Kelvington Island leave from?", FERRY, ("Pier 3",)),
    FactQuestion(
        "How long does the ferry crossing to Kelvington Island take?", FERRY, ("35 minutes",)
    ),
    FactQuestion(
        "When does the first ferry leave Harwick for Kelvington Island on a weekday in summer?",
        FERRY,
        ("6:45",),
    ),
    FactQuestion("When does the last ferry leave Kelvington Island in winter?", FERRY, ("18:40",)),
    FactQuestion("How much is an adult return ticket to Kelvington Island?", FERRY, ("€22",)),
    FactQuestion(
        "Can I take my car on the ferry to Marren Point?",
        FERRY,
        (
            "not carried",
            "foot passengers and bicycles only",
            "does not carry cars",
            "do not carry cars",
            "can not take",
            "can not be taken",
        ),
    ),
    FactQuestion(
        "When does the summer ferry timetable end?",
        FERRY,
        ("30 September 2025", "30 September"),
    ),
    FactQuestion("Above what wind speed may ferry sailings be cancelled?", FERRY, ("45 knots",)),
    # the walking guide to the island
    FactQuestion("How long is the Kelvington Island coastal path?", COAST, ("14.5 km",)),
    FactQuestion("When was the Gull Head lighthouse built?", COAST, ("1887",)),
    FactQuestion(
        "When is the north cliff section of the coastal path closed?",
        COAST,
        (("15 March", "31 July"),),
    ),
    FactQuestion(
        "How much does a tent cost a night at the Sandwick Bay campsite?", COAST, ("€14",)
    ),
    FactQuestion(
        "Where can walkers get drinking water on the Kelvington Island coastal path?",
        COAST,
        ("lighthouse",),
    ),
    # the library
    FactQuestion(
        "How long can I borrow a DVD from Harwick Town Library?", LIBRARY, ("7 days", "1 week")
    ),
    FactQuestion("What is the late fee at Harwick Town Library?", LIBRARY, ("€0.20",)),
    FactQuestion(
        "Can DVDs from Harwick Town Library be renewed?",
        LIBRARY,
        ("cannot be renewed", "not renewable", "can not renew", "not be renewed"),
    ),
    FactQuestion("At what time does Harwick Town Library open on Wednesdays?", LIBRARY, ("13:00",)),
    # the espresso machine
    FactQuestion("How much does the Verane Duo Plus cost?", ESPRESSO, ("€549",)),
    FactQuestion(
        "How long does the Verane Duo take to heat up from cold?", ESPRESSO, ("25 seconds",)
    ),
    FactQuestion(
        "Can I descale the Verane Duo with vinegar?",
        ESPRESSO,
        ("never use vinegar", "not use vinegar", "damages the seals", "not vinegar"),
    ),
    FactQuestion(
        "How often should the Verane Duo's water filter cartridge be replaced?",
        ESPRESSO,
        ("60 days",),
    ),
    # the house rules
    FactQuestion(
        "On which day is general waste collected at Lindqvist Court?", FLATS, ("Tuesday",)
    ),
    FactQuestion("How long is a laundry slot at Lindqvist Court?", FLATS, ("3 hours",)),
    FactQuestion(
        "How long may a visitor use a guest parking space at Lindqvist Court?",
        FLATS,
        ("48 hours",),
    ),
    FactQuestion(
        "Are charcoal barbecues allowed on the balconies at Lindqvist Court?",
        FLATS,
        ("not allowed", "not permitted", "are forbidden", "are prohibited"),
    ),
)
"""The fact questions."""

FOLLOW_UPS: tuple[FollowUp, ...] = (
    FollowUp(
        "And how much does it weigh?",
        ("How much does the Ambervolt Trek 300 cost?", "The Trek 300 costs €449 [1]."),
        "How much does the Ambervolt Trek 300 weigh?",
        "Trek 300",
        TREK_300,
        ("4.3 kg",),
    ),
    FollowUp(
        "How long does it take to charge from a wall socket?",
        (
            "What is the battery capacity of the Ambervolt Trek 600?",
            "The Trek 600 has a 576 Wh battery [1].",
        ),
        "How long does the Ambervolt Trek 600 take to charge fully from a wall socket?",
        "Trek 600",
        TREK_600,
        ("1.5 hours", "90 minutes"),
    ),
    FollowUp(
        "Until when can I register mine?",
        (
            "Which Trek 600 units are affected by the Ambervolt recall?",
            "Units with serial numbers from TK6-2403-00001 to TK6-2403-05200 [1].",
        ),
        "Until when can owners register an affected Trek 600 for the recall?",
        "Trek 600",
        RECALL,
        ("31 January 2026",),
    ),
    FollowUp(
        "Does it cover cosmetic damage like scratches?",
        (
            "How long is the warranty on the Ambervolt Trek 600?",
            "Three years from the date of purchase, or five years if it is registered in the "
            "app within 30 days [1].",
        ),
        "Does the Ambervolt warranty cover cosmetic damage such as scratches?",
        "Ambervolt",
        WARRANTY,
        ("not covered", "does not cover", "is excluded"),
    ),
    FollowUp(
        "How much does a spare one cost?",
        (
            "How often should the impeller of the Quellmark SP-40 be checked?",
            "Every 3 months [1].",
        ),
        "How much does a spare impeller for the Quellmark SP-40 cost?",
        "impeller",
        PUMP,
        ("€24",),
    ),
    FollowUp(
        "And how much does an adult single ticket cost?",
        (
            "Which pier does the ferry to Kelvington Island leave from?",
            "It leaves from Pier 3 in Harwick [1].",
        ),
        "How much does an adult single ticket on the ferry to Kelvington Island cost?",
        "Kelvington Island",
        FERRY,
        ("€12.50",),
    ),
    FollowUp(
        "How long does that crossing take?",
        (
            "Which pier do ferries to Marren Point leave from?",
            "Ferries to Marren Point leave from Pier 5 [1].",
        ),
        "How long does the ferry crossing to Marren Point take?",
        "Marren Point",
        FERRY,
        ("50 minutes",),
    ),
    FollowUp(
        "How many times can I renew it?",
        (
            "How long can I borrow a book from Harwick Town Library?",
            "Books are lent for 21 days [1].",
        ),
        "How many times can a book from Harwick Town Library be renewed?",
        "book",
        LIBRARY,
        ("twice", "2 times"),
    ),
    FollowUp(
        "How big is its water tank?",
        (
            "How often should the Verane Duo espresso machine be descaled?",
            "Every 2 months, or after 200 cups if that comes first [1].",
        ),
        "How big is the water tank of the Verane Duo espresso machine?",
        "Verane Duo",
        ESPRESSO,
        ("1.8 litres",),
    ),
    FollowUp(
        "And at weekends?",
        (
            "When are the quiet hours at Lindqvist Court on weekdays?",
            "From 22:00 to 7:00 [1].",
        ),
        "When are the quiet hours at Lindqvist Court at weekends?",
        "quiet hours",
        FLATS,
        (("23:00", "9:00"),),
    ),
)
"""The follow-up questions, each with its conversation."""

UNANSWERABLE: tuple[Unanswerable, ...] = (
    Unanswerable(
        "What is the wifi password on the ferry to Kelvington Island?",
        FERRY,
        ("wifi", "ferry"),
        ("password",),
    ),
    Unanswerable("Who is the captain of the MV Tern?", FERRY, ("MV Tern",), ("captain", "skipper")),
    Unanswerable(
        "How fast does the MV Tern sail, in knots?",
        FERRY,
        ("MV Tern", "knots"),
        ("speed", "top speed", "cruising"),
    ),
    Unanswerable(
        "Which bus goes from the town centre to Pier 3 in Harwick?",
        FERRY,
        ("Pier 3", "Harwick"),
        ("bus", "town centre"),
    ),
    Unanswerable(
        "How loud is the Quellmark SP-40 pump when it runs, in decibels?",
        PUMP,
        ("Quellmark SP-40",),
        ("decibels", "dB", "noise"),
    ),
    Unanswerable(
        "What is the e-mail address of the Ambervolt recall hotline?",
        RECALL,
        ("recall hotline",),
        ("e-mail address", "email address"),
    ),
    Unanswerable(
        "In which year was Harwick Town Library founded?",
        LIBRARY,
        ("Harwick Town Library",),
        ("founded", "established"),
    ),
    Unanswerable(
        "How tall is the Gull Head lighthouse?",
        COAST,
        ("Gull Head lighthouse",),
        ("tall", "height"),
    ),
    Unanswerable(
        "What is the door code of the bike room at Lindqvist Court?",
        FLATS,
        ("bike room", "Lindqvist Court"),
        ("code", "door code"),
    ),
    Unanswerable(
        "How many calories are in an espresso from the Verane Duo?",
        ESPRESSO,
        ("espresso", "Verane Duo"),
        ("calories", "kcal"),
    ),
)
"""The questions the documents cannot answer."""


def all_cases() -> list[AnswerCase]:
    """Every question of the set: facts, then follow-ups, then the unanswerable ones."""
    return [*FACT_QUESTIONS, *FOLLOW_UPS, *UNANSWERABLE]


def _document_files() -> list[tuple[str, bytes]]:
    folder = resources.files("aictl.evaluation") / "answers"
    return sorted(
        (entry.name, entry.read_bytes()) for entry in folder.iterdir() if entry.name.endswith(".md")
    )


def answer_set_hash() -> str:
    """A hash of the set's documents (names and bytes): it changes when a document does."""
    digest = hashlib.sha256()
    for name, data in _document_files():
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def answer_documents() -> list[Document]:
    """The set's documents, sorted by name, with id ``answers/<file>``.

    The metadata holds ``path``, ``title`` and the set's hash (:data:`SET_HASH_KEY`), so
    that chunks from another version of the set can be found and replaced.
    """
    set_hash = answer_set_hash()
    documents = []
    for name, data in _document_files():
        text = data.decode("utf-8")
        title = markdown_title(text)
        doc_id = f"answers/{name}"
        metadata = {"path": doc_id, "title": title, SET_HASH_KEY: set_hash}
        documents.append(Document(id=doc_id, title=title, text=text, metadata=metadata))
    return documents
