"""The retrieval set: the Python language reference and questions labelled by hand.

The corpus is ``pydoc_data.topics.topics``, the help texts that ``help("if")`` shows,
shipped in the standard library of every CPython (PSF license, so it may be used and
redistributed): 79 topics, about 465,000 characters, one document per topic, with the
topic key as the document id. The texts change a little between Python versions;
the labels were made against Python 3.11 and every labelled key exists in 3.11 to 3.13.

How the questions were written and labelled: 60 questions, written by hand the way a
user asks (no sentence copied from the topics, and words the topics use avoided where
a user would say it otherwise, so that matching words is not free). Each names the
topics that answer it, with graded relevance:

- 2: the topic that answers the question (two when both do, e.g. ``if`` and ``else``,
  whose texts are the same);
- 1: a topic that answers it in part, or that holds the answering topic's text inside a
  much longer one (``compound`` holds ``if``, ``for``, ``try``, ``with``, ``class``...;
  ``specialnames`` holds ``customization``, ``attribute-access``, ``numeric-types``...;
  ``execmodel`` holds ``naming`` and ``exceptions``; ``typesseq`` holds
  ``typesseq-mutable``; ``assignment`` holds ``augassign``; ``identifiers`` holds
  ``id-classes``; ``comparisons`` holds ``in``).

Any other topic is 0. The labels were checked against the texts (the phrase that
answers each question was looked up in its grade-2 topics); ``tests/test_evaluation.py``
checks that every labelled key is a topic.

Retrieval is scored per document: documents are chunked as ingest chunks them, and a
document's rank is the rank of its best chunk (:mod:`aictl.evaluation.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from handler_base.rag.documents import Document

COLLECTION = "eval_python_reference"
"""The collection ``aictl eval`` ingests the corpus into (names take no hyphens)."""


@dataclass(frozen=True)
class RetrievalCase:
    """One question and the graded relevance of the documents that answer it."""

    question: str
    relevance: dict[str, int] = field(hash=False)


def corpus() -> list[Document]:
    """The topics of this Python's ``pydoc_data``, one document each, sorted by key.

    The title is the topic's first line (``The "if" statement``).
    """
    from pydoc_data.topics import topics

    documents = []
    for key in sorted(topics):
        text: str = topics[key]
        title = text.strip().splitlines()[0].strip()
        documents.append(
            Document(id=key, title=title, text=text, metadata={"title": title, "topic": key})
        )
    return documents


def _case(question: str, **relevance: int) -> RetrievalCase:
    # Keyword names cannot hold "-": topic keys are written with "_" here.
    return RetrievalCase(question, {k.replace("_", "-"): v for k, v in relevance.items()})


RETRIEVAL_SET: tuple[RetrievalCase, ...] = (
    _case(
        "How do I check that a condition holds while debugging, without the check costing "
        "anything when the program runs optimized?",
        **{"assert": 2},
    ),
    _case("Can I swap two variables in one line, like a, b = b, a?", assignment=2),
    _case(
        "How do I write a function that can pause while it waits for the network?",
        **{"async": 2, "await": 1, "compound": 1},
    ),
    _case(
        "How can my class supply a fallback value when someone reads a property it does not have?",
        attribute_access=2,
        specialnames=1,
    ),
    _case(
        "Is there a shorter way to write counter = counter + 1?",
        augassign=2,
        assignment=1,
    ),
    _case(
        "What does the @ operator do between two objects?",
        binary=2,
        numeric_types=1,
        operator_summary=1,
        specialnames=1,
    ),
    _case(
        "How do I combine two integers so that only the bits set in both remain?",
        bitwise=2,
    ),
    _case(
        "What is the three-dots object for?",
        bltin_ellipsis_object=2,
        types=1,
    ),
    _case(
        "What does a function hand back when it ends without giving a result?",
        bltin_null_object=2,
        **{"return": 1},
    ),
    _case(
        "How do I leave a loop early once I have found what I was looking for?",
        **{"break": 2, "for": 1, "while": 1},
    ),
    _case(
        "How do I make objects of my class usable as if they were functions?",
        callable_types=2,
        specialnames=1,
    ),
    _case(
        "When I pass named values and *args to a function, how are they matched to its parameters?",
        calls=2,
        function=1,
    ),
    _case(
        "How do I define my own type that inherits from another one?",
        **{"class": 2, "compound": 1},
    ),
    _case(
        "Does 1 < x < 10 work in Python, and how is it worked out?",
        comparisons=2,
    ),
    _case(
        "How do I write an object that sets something up before a block of code and "
        "always cleans up after it?",
        context_managers=2,
        **{"with": 2},
        compound=1,
        specialnames=1,
    ),
    _case("How do I jump straight to the next round of a loop?", **{"continue": 2}),
    _case(
        "If I add an int and a float, what type do I get back?",
        conversions=2,
        binary=1,
    ),
    _case(
        "How do I stop my program at a certain line and step through it?",
        debugger=2,
    ),
    _case(
        "How do I get rid of a variable, or of one element of a list?",
        **{"del": 2},
        typesseq_mutable=1,
        typesseq=1,
    ),
    _case(
        "How do I build a mapping of keys to values from a loop in one expression?",
        dict=2,
        typesmapping=1,
    ),
    _case(
        "Can code run by eval() or exec() see the variables of the function around it?",
        dynamic_features=2,
        execmodel=1,
        naming=1,
    ),
    _case(
        "What runs when none of the conditions in my if / elif chain is true?",
        **{"if": 2, "else": 2, "compound": 1},
    ),
    _case(
        "What happens to an error that nobody catches?",
        exceptions=2,
        execmodel=1,
        **{"try": 1},
    ),
    _case(
        "Where is a variable visible: which parts of a program have their own scope?",
        naming=2,
        execmodel=1,
    ),
    _case(
        "Why does x = 1, give me a tuple instead of a number?",
        exprlists=2,
        typesseq=1,
    ),
    _case(
        "How do I type a very large number like 6.02 times ten to the 23rd in code?",
        floating=2,
        numbers=1,
    ),
    _case(
        "How do I go through every element of a list one at a time?",
        **{"for": 2, "compound": 1},
    ),
    _case(
        "How do I turn a number into text padded with zeros to a fixed width?",
        formatstrings=2,
        string_methods=1,
    ),
    _case(
        "Why does a list given as a default parameter keep what I appended in earlier calls?",
        function=2,
        compound=1,
    ),
    _case(
        "How do I change a module-level variable from inside a function?",
        **{"global": 2},
        naming=1,
    ),
    _case(
        "What do names starting with an underscore, or wrapped in double underscores, mean?",
        id_classes=2,
        identifiers=1,
    ),
    _case(
        "Which words am I not allowed to use as variable names?",
        identifiers=2,
    ),
    _case(
        "How do I write a complex number with an imaginary part?",
        imaginary=2,
        numbers=1,
    ),
    _case(
        "How do I use code from another file, and what does from package import name do?",
        **{"import": 2},
    ),
    _case(
        "How do I check whether a value is among the elements of a list, or a substring "
        "part of a string?",
        **{"in": 2},
        comparisons=1,
        typesseq=1,
    ),
    _case(
        "How do I write a number in hex or binary, and can I put underscores in long numbers?",
        integers=2,
        numbers=1,
    ),
    _case(
        "How do I write a tiny function without a name, inline?",
        **{"lambda": 2},
    ),
    _case(
        "Can a nested function rebind a variable of the function it sits in?",
        **{"nonlocal": 2},
        naming=1,
    ),
    _case(
        "How do I make + work between two objects of my own class?",
        numeric_types=2,
        specialnames=1,
    ),
    _case(
        "What is the difference between two variables holding equal values and holding "
        "the very same object?",
        objects=2,
        comparisons=1,
    ),
    _case(
        "Which binds tighter, not or and, and in what order are operators worked out?",
        operator_summary=2,
        booleans=1,
    ),
    _case(
        "What do I put in a function body that should do nothing yet?",
        **{"pass": 2},
    ),
    _case("Is -2 ** 2 equal to 4 or to -4?", power=2, operator_summary=1),
    _case(
        "How do I throw an error on purpose and keep the original error as its cause?",
        **{"raise": 2},
        exceptions=1,
    ),
    _case(
        "How do I make my own container support len() and square-bracket lookups?",
        sequence_types=2,
        specialnames=1,
    ),
    _case(
        "How do I multiply an integer by a power of two by moving its bits?",
        shifting=2,
    ),
    _case(
        "How do I take every second element of a list, or only its last three?",
        slicings=2,
        typesseq=1,
    ),
    _case(
        "Where do I find the name of an object's class and the dictionary of its attributes?",
        specialattrs=2,
    ),
    _case(
        "How do I cut a line of text at the commas and trim the spaces around each part?",
        string_methods=2,
    ),
    _case(
        "How do I write text that spans several lines, or where backslashes stay as they are?",
        strings=2,
    ),
    _case(
        "Which values count as false in a condition?",
        truth=2,
        booleans=1,
    ),
    _case(
        "How do I run cleanup code whether or not something went wrong?",
        **{"try": 2, "compound": 1},
        exceptions=1,
    ),
    _case(
        "Where does a function keep its default argument values and its docstring?",
        types=2,
        typesfunctions=1,
    ),
    _case(
        "How do I read a key from a dict but get a fallback value when it is missing?",
        typesmapping=2,
    ),
    _case(
        "What is a bound method, and how do I reach the function behind it?",
        typesmethods=2,
        types=1,
    ),
    _case(
        "How do I add an element at the end of a list, or at a given position?",
        typesseq_mutable=2,
        typesseq=1,
    ),
    _case(
        "How do I repeat something for as long as a condition stays true?",
        **{"while": 2, "compound": 1},
    ),
    _case(
        "How do I make a function that hands out values lazily, one at a time?",
        **{"yield": 2},
        types=1,
    ),
    _case(
        "How do I control what my object looks like when printed or shown in the interpreter?",
        customization=2,
        specialnames=1,
    ),
    _case(
        "How does Python rename attributes that start with two underscores inside a class?",
        atom_identifiers=2,
        id_classes=1,
        identifiers=1,
    ),
)
"""The labelled questions (60)."""
