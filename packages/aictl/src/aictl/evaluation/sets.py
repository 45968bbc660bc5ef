"""The labelled set over the sample knowledge base.

The sample is what `aictl up` ingests (aictl/sample/). Each question has the one
document that holds its answer (relevance 1; the others 0) and the fact the answer must
contain.

How it was labelled: every question was written by hand for one fact stated in exactly
one sample document, so that document is the only relevant one; the facts are the
document's own words. No published BEIR set ships inside a package (see BENCHMARKS.md),
so this is the offline set.
"""

from dataclasses import dataclass

AURORA = "sample/aurora-x7.md"
SUPPORT = "sample/skylark-support.md"
PLATFORM = "sample/about-this-platform.md"


@dataclass(frozen=True)
class EvalCase:
    """One question, its one relevant document and the facts a right answer states."""

    question: str
    relevant_doc: str
    # any one of these, after normalize_answer, must appear in the answer
    facts: tuple[str, ...]

    @property
    def relevance(self) -> dict[str, int]:
        """The graded judgements: the relevant document 1, any other 0."""
        return {self.relevant_doc: 1}


EVAL_SET: tuple[EvalCase, ...] = (
    EvalCase("How long does the Aurora X7 fly on one charge?", AURORA, ("42 minutes",)),
    EvalCase("What is the capacity of the Aurora X7 battery?", AURORA, ("5200 mAh",)),
    EvalCase("What video resolution does the Aurora X7 camera record?", AURORA, ("6K",)),
    EvalCase("How much does the Aurora X7 weigh?", AURORA, ("890 grams", "890 g")),
    EvalCase("How much does the Aurora X7 cost?", AURORA, ("1149 euros", "1149 eur")),
    EvalCase("How small does the Aurora X7 fold?", AURORA, ("water bottle",)),
    EvalCase("How long is the warranty on a Skylark drone?", SUPPORT, ("3 years", "three years")),
    EvalCase(
        "When is the Skylark Robotics support desk open?",
        SUPPORT,
        ("8 in the morning", "8 am", "8:00"),
    ),
    EvalCase("Is a broken propeller replaced for free?", SUPPORT, ("first year",)),
    EvalCase(
        "When are firmware updates for Skylark drones published?",
        SUPPORT,
        ("first Monday",),
    ),
    EvalCase("Where is the assistant's knowledge base stored?", PLATFORM, ("Milvus",)),
    EvalCase(
        "Which command adds my own documents to the knowledge base?",
        PLATFORM,
        ("aictl ingest",),
    ),
)
