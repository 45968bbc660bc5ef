"""Whisper hears the knowledge base's names: hotwords on against off, Piper and espeak-ng.

The voice app gives Whisper the request's collection vocabulary (names and rare terms
gathered at ingest, :mod:`chat_handler.rag.vocabulary`) as faster-whisper's
``hotwords``. This measures what that changes, in-process (no Ray):

1. Ingest: the documents go through the chat's own ingest (:meth:`RAGPipeline.ingest`:
   chunking, all-MiniLM-L6-v2 on onnxruntime in this process, an in-memory store), which
   gathers the collection's vocabulary; the hotwords are its terms joined by spaces.
   The documents are the answer set's (``aictl.evaluation.answer_set``: a ferry
   timetable, power stations, a pump manual...) when it is installed, else a few
   invented ones written below.
2. Speech: each question is spoken by the platform's Piper voice (en_US joe medium) and by
   espeak-ng (Debian's ``espeak-ng``, en-us).
3. Whisper base (int8, the platform's joined model folder, ``WhisperConfig.model_dir``)
   transcribes every clip with and without the hotwords, as the deployment does
   (``WhisperTranscriber``: beam 5, Silero VAD, language ``en``, 2 threads).

Scores: *name words right*: the words of the question's names (capitalised words after
the first, and codes such as SP-40 or mAh) found in the transcript, word for word (a bag
of words: order aside); *word accuracy*: 1 - WER over all questions (edit distance over
reference words, lower-cased, punctuation dropped); *exact*: transcripts equal to the
question once normalized; transcription time p50.

Run: ``.venv/bin/python bench/hotwords.py [-n 20] [--out bench/results/hotwords.json]``;
``--quick``: 2 questions, nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from _common import markdown_table, print_result
from chat_handler.rag import RAGPipeline
from chat_handler.rag.vocabulary import (
    MAX_TERMS,
    MAX_TERMS_CHARS,
    extract_vocabulary,
    is_code,
)
from chat_handler.rag.vocabulary import hotwords as hotwords_of
from chat_handler.stores import InMemoryStore
from handler_base.clients import EmbeddingsClient, LLMClient
from handler_base.inference import TranscriptionOptions
from handler_base.rag.documents import Document
from handler_base.settings import Settings
from handler_base.testing.speech import normalize_words, speak, word_accuracy
from ray_inference.text_encoder import TextEncoder
from ray_inference.whisper import WhisperConfig, WhisperTranscriber

COLLECTION = "hotwords"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "hotwords.json"
VOICES = {"piper": None, "espeak-ng": "espeak-ng"}
"""Voice label -> ``speak``'s voice argument."""
FIRST_QUESTION = "Which pier does the ferry to Kelvington Island leave from?"
"""The question the issue heard wrong: always asked first."""

OWN_DOCUMENTS = [
    Document(
        id="ferry",
        text=(
            "Harwick Sound Ferries runs the route from Harwick to Kelvington Island. Ferries "
            "to Kelvington Island leave from Pier 3 and arrive at the slipway in Port Ellery. "
            "The crossing takes 35 minutes; the MV Tern carries 40 cars. Ferries to Marren "
            "Point leave from Pier 5."
        ),
    ),
    Document(
        id="pump",
        text=(
            "The Quellmark SP-40 submersible pump moves 9,000 litres an hour. Its float "
            "switch, part SP40-FS-02, turns it on at 50 cm. Descaling the impeller every "
            "spring keeps the Quellmark running."
        ),
    ),
    Document(
        id="power",
        text=(
            "The Ambervolt Trek 600 power station stores 180,000 mAh and weighs 7.9 kg. "
            "Owners of an Ambervolt Trek 600 may call the recall hotline. The Gull Head "
            "lighthouse above Sandwick Bay is a walk from Port Ellery."
        ),
    ),
]
OWN_QUESTIONS = [
    FIRST_QUESTION,
    "How long is the crossing to Port Ellery on the MV Tern?",
    "Where do ferries to Marren Point leave from?",
    "What is the part number of the Quellmark SP-40 float switch?",
    "How often should the impeller of the Quellmark be descaled?",
    "How much does the Ambervolt Trek 600 weigh?",
    "What is the capacity of the Trek 600 in mAh?",
    "How far is the Gull Head lighthouse from Sandwick Bay?",
]


def answer_set() -> tuple[list[Document], list[str]] | None:
    """The answer set's documents and its fact questions, when ``aictl`` has it."""
    try:
        from aictl.evaluation import answer_set as answers
    except ImportError:
        return None
    documents: list[Document] = answers.answer_documents()
    questions = [question.question for question in answers.FACT_QUESTIONS]
    return documents, questions


def name_words(question: str) -> list[str]:
    """The words of the question's names: capitalised words after the first, and codes."""
    words = question.split()
    picked = []
    for index, word in enumerate(words):
        core = word.strip("?!.,;:'\"()").removesuffix("'s").removesuffix("\u2019s")
        if not core or core.isdigit():
            continue
        if (index > 0 and core[0].isupper()) or is_code(core):
            picked.extend(normalize_words(core))
    return picked


def pick_questions(questions: Sequence[str], n: int) -> list[str]:
    """``n`` questions with names, the issue's first, the rest spread in the set's order."""
    with_names = [q for q in questions if name_words(q) and q != FIRST_QUESTION]
    picked = [FIRST_QUESTION]
    step = max(1, len(with_names) // max(1, n - 1))
    picked += with_names[::step][: n - 1]
    return picked[:n]


def found_words(reference: list[str], hypothesis: str) -> int:
    """How many of the ``reference`` words the hypothesis holds (a bag: counts matter)."""
    heard = Counter(normalize_words(hypothesis))
    found = 0
    for word in reference:
        if heard[word] > 0:
            heard[word] -= 1
            found += 1
    return found


class _InProcessEmbeddings:
    """The embeddings client's ``embed``, by the same encoder in this process."""

    def __init__(self) -> None:
        self.encoder = TextEncoder.from_sources()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = await asyncio.to_thread(self.encoder.encode, list(texts))
        return [[float(x) for x in row] for row in vectors.vectors]


async def ingest(documents: Sequence[Document], budget: tuple[int, int] | None) -> list[str]:
    """Ingest through the chat's pipeline into memory; the vocabulary it gathered.

    ``budget``: (terms, characters) to select the vocabulary again from the stored chunks
    within, in place of the shipped :data:`MAX_TERMS` and :data:`MAX_TERMS_CHARS`.
    """
    settings = Settings()
    store = InMemoryStore(settings)
    pipeline = RAGPipeline(
        cast(EmbeddingsClient, _InProcessEmbeddings()), store, LLMClient(settings)
    )
    await pipeline.ingest(COLLECTION, documents)
    if budget is not None:
        return extract_vocabulary(await store.texts(COLLECTION), *budget)
    return await store.vocabulary(COLLECTION) or []


@dataclass
class Heard:
    voice: str
    hotwords: bool
    question: str
    transcript: str
    seconds: float


def transcribe_all(
    transcriber: WhisperTranscriber, clips: dict[tuple[str, str], bytes], hotwords: str
) -> list[Heard]:
    """Every clip without and then with the hotwords, alternating, timed."""
    heard = []
    for (voice, question), wav in clips.items():
        for on in (False, True):
            options = TranscriptionOptions(hotwords=hotwords if on else None)
            start = time.perf_counter()
            text = transcriber.transcribe(wav, options).text
            heard.append(Heard(voice, on, question, text, time.perf_counter() - start))
    return heard


def score(heard: Sequence[Heard]) -> dict[str, Any]:
    """Name words right, word accuracy, exact transcripts and time of some transcripts."""
    names_total = names_found = words_total = 0
    errors = 0.0
    exact = 0
    for h in heard:
        names = name_words(h.question)
        names_total += len(names)
        names_found += found_words(names, h.transcript)
        reference = normalize_words(h.question)
        words_total += len(reference)
        errors += (1 - word_accuracy(h.question, h.transcript)) * len(reference)
        exact += normalize_words(h.transcript) == reference
    seconds = [h.seconds for h in heard]
    return {
        "n": len(heard),
        "name_words": names_total,
        "name_accuracy": round(names_found / names_total, 3) if names_total else None,
        "word_accuracy": round(1 - errors / words_total, 3),
        "exact": exact,
        "transcribe_p50_ms": round(statistics.median(seconds) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="questions (default 20)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument("--quick", action="store_true", help="2 questions, nothing written")
    parser.add_argument(
        "--budget",
        type=int,
        nargs=2,
        metavar=("TERMS", "CHARS"),
        help=f"vocabulary size to try (shipped: {MAX_TERMS} terms, {MAX_TERMS_CHARS} chars)",
    )
    args = parser.parse_args()
    n = 2 if args.quick else args.n

    found = answer_set()
    documents, questions = found if found is not None else (OWN_DOCUMENTS, OWN_QUESTIONS)
    if FIRST_QUESTION not in questions:
        documents, questions = OWN_DOCUMENTS, OWN_QUESTIONS
    asked = pick_questions(questions, n)

    terms = asyncio.run(ingest(documents, args.budget))
    hotwords = hotwords_of(terms) or ""
    clips = {(voice, q): speak(q, engine) for voice, engine in VOICES.items() for q in asked}

    with tempfile.TemporaryDirectory() as scratch:
        # The platform's model folder; a fresh one (joined from the packages) for a quick run.
        data_dir = scratch if args.quick else None
        model_dir = WhisperConfig(data_dir=data_dir).model_dir()
        transcriber = WhisperTranscriber(model_dir, cpu_threads=2, default_language="en")
        transcriber.transcribe(clips[next(iter(clips))])  # warm up
        heard = transcribe_all(transcriber, clips, hotwords)

    results: dict[str, dict[str, Any]] = {}
    for voice in VOICES:
        results[voice] = {
            state: score([h for h in heard if h.voice == voice and h.hotwords == on])
            for state, on in (("off", False), ("on", True))
        }
    examples = [
        {
            "voice": voice,
            "question": q,
            "off": next(
                h.transcript
                for h in heard
                if (h.voice, h.question, h.hotwords) == (voice, q, False)
            ),
            "on": next(
                h.transcript for h in heard if (h.voice, h.question, h.hotwords) == (voice, q, True)
            ),
        }
        for voice, q in clips
    ]
    result = {
        "bench": "hotwords",
        "documents": "answer set" if documents is not OWN_DOCUMENTS else "own",
        "questions": len(asked),
        "terms": len(terms),
        "budget": args.budget or [MAX_TERMS, MAX_TERMS_CHARS],
        "hotwords_chars": len(hotwords),
        "hotwords": hotwords,
        "results": results,
        "transcripts": examples,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    rows = [
        [
            voice,
            state,
            r["n"],
            f"{r['name_accuracy']:.3f} ({r['name_words']} words)",
            f"{r['word_accuracy']:.3f}",
            f"{r['exact']}/{r['n']}",
            r["transcribe_p50_ms"],
        ]
        for voice, by_state in results.items()
        for state, r in by_state.items()
    ]
    table = markdown_table(
        ["voice", "hotwords", "n", "name words right", "word accuracy", "exact", "p50 ms"],
        rows,
        "llrrrrr",
    )
    print_result(result, table)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
