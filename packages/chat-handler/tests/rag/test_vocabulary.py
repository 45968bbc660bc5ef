"""A collection's vocabulary: names, codes and rare words, ranked and bounded for Whisper."""

from pathlib import Path

import pytest

from chat_handler.rag.vocabulary import (
    MAX_TERMS,
    MAX_TERMS_CHARS,
    VOCABULARY_CHUNKS,
    count_terms,
    extract_vocabulary,
    hotwords,
    is_code,
    is_common,
    refresh_vocabulary,
)
from chat_handler.stores import InMemoryStore
from chat_handler.testing import SMALL_DIM, lite_settings
from chat_handler.testing import chunk_record as chunk

FERRY = (
    "Harwick Sound Ferries runs two routes from Harwick. Ferries to Kelvington Island leave "
    "from the pier in Harwick and arrive at the slipway in Port Ellery. Tickets cost 12 euros."
)


def names(*texts: str) -> list[str]:
    return sorted(count_terms(texts).names)


def rare(*texts: str) -> list[str]:
    return sorted(count_terms(texts).rare)


def test_names_are_capitalised_runs_that_do_not_start_a_sentence() -> None:
    assert names(FERRY) == [
        "Harwick",
        "Harwick Sound Ferries",
        "Kelvington Island",
        "Port Ellery",
    ]
    # "Ferries" starts a sentence, and no name mid-sentence begins with it (it ends one);
    # "Tickets" starts one too: neither is a name.
    assert "Ferries" not in names(FERRY)
    assert "Tickets" not in names(FERRY)


def test_a_sentence_start_counts_when_the_word_is_capitalised_elsewhere() -> None:
    text = "Kelvington Island has one village. The ferry to Kelvington Island is slow."
    assert count_terms([text]).names["Kelvington Island"] == 2
    # Alone, a capitalised first word is an ordinary word.
    assert names("Kelvington has one village.") == []


def test_function_words_end_names_and_connectors_join_them() -> None:
    assert names("We sailed to the Isle of Wight and the Isle of Man.") == [
        "Isle of Man",
        "Isle of Wight",
    ]
    assert names("He said The Harbour Inn was shut.") == ["Harbour Inn"]
    assert names("Ask at Sandwick Bay of course.") == ["Sandwick Bay"]


def test_abbreviations_do_not_end_the_sentence() -> None:
    assert names("The housing was designed by Dr. Okafor in teal.") == ["Okafor"]
    assert names("Housing by Dr. Okafor. Okafor likes teal.") == ["Okafor"]


def test_common_and_lower_case_words_are_not_names() -> None:
    # Days, months and a run of them; "I"; a word the texts also write in lower case.
    text = "Open on Monday and on the first Saturday of March. I think the Timetable helps."
    assert names(text, "The timetable is on the wall.") == []


def test_markdown_line_breaks_headings_and_items() -> None:
    document = (
        "# Ferry Timetable\n"
        "Ferries to Kelvington\nIsland leave from Pier 3.\n\n"
        "- Marren Point: three sailings.\n"
        "- Harwick: seven.\n"
    )
    found = names(document)
    assert "Kelvington Island" in found  # a wrapped line does not cut a name
    assert "Timetable" not in found  # a heading's words start a sentence
    assert "Pier" in found
    # In a chunk, the lines run together: the heading's words are still not names.
    chunk_text = "## Firmware Firmware updates are published on the first Thursday."
    assert names(chunk_text) == []


@pytest.mark.parametrize(
    ("word", "code"),
    [
        ("ZX-41", True),
        ("X7", True),
        ("mp3", True),
        ("mAh", True),
        ("iPhone", True),
        ("LiFePO4", True),
        ("SP40-FS-02", True),
        ("TK6-2404", True),
        ("TK6-2403-00001", False),  # a serial number: 7 digits
        ("3-year", False),
        ("24-hour", False),
        ("1st", False),
        ("10am", False),
        ("417", False),
        ("Harwick", False),
        ("pier", False),
    ],
)
def test_codes(word: str, code: bool) -> None:
    assert is_code(word) is code


def test_acronyms_alone_are_left_out() -> None:
    assert names("Prices include VAT. Charge it over USB-C or from the AC outlet.") == []
    assert names("Board the MV Tern at the slipway.") == ["MV Tern"]


def test_a_heading_keeps_its_names_whole() -> None:
    chunk_text = (
        "## Kelvington Island route Ferries to Kelvington Island leave from the slipway. "
        "The crossing to Kelvington Island is calm."
    )
    assert count_terms([chunk_text]).names == {"Kelvington Island": 3}


def test_a_name_inside_a_more_frequent_one_is_left_out() -> None:
    texts = ["We go to Kelvington Island, to Kelvington Island and to Kelvington's pier."]
    assert count_terms(texts).names == {"Kelvington Island": 2, "Kelvington": 1}
    assert extract_vocabulary(texts) == ["Kelvington Island", "pier"]


def test_codes_count_as_names_anywhere_and_numbers_never() -> None:
    text = "ZX-41 units ship with a 5,200 mAh cell. It costs 417 euros; the mp3 player 12."
    assert names(text) == ["ZX-41", "mAh", "mp3"]
    assert names("The Aurora X7 weighs 2.3 kg.") == ["Aurora X7"]


def test_rare_words_are_uncommon_lower_case_words() -> None:
    text = (
        "Descale the impeller of the pump every spring. The water tickets were bought "
        "by the passengers at the slipway, who walked."
    )
    assert rare(text) == ["descale", "impeller", "passengers", "slipway"]
    assert is_common("tickets")
    assert is_common("walked")
    assert is_common("bigger")
    assert is_common("ferries") is False


def test_terms_are_ranked_names_first_then_by_count() -> None:
    texts = [
        "The slipway at Port Ellery. The slipway at Port Ellery.",
        "Ferries leave Harwick. Ferries reach Port Ellery past the slipway and a lighthouse.",
    ]
    assert extract_vocabulary(texts) == [
        "Port Ellery",
        "Harwick",
        "slipway",
        "ferries",
        "lighthouse",
    ]


def test_the_vocabulary_is_bounded_for_whispers_prompt() -> None:
    texts = [f"We met Zorbinski{i} Quellmark at Vanterpool{i}." for i in range(200)]
    texts += [f"The {w} was {w}." for w in ("gizmo", "doohickey", "thingamajig") * 50]
    terms = extract_vocabulary(texts)
    assert len(terms) <= MAX_TERMS
    assert len(" ".join(terms)) <= MAX_TERMS_CHARS
    # Names take two thirds of the terms; rare words keep their share.
    assert {"gizmo", "doohickey", "thingamajig"} <= set(terms)

    small = extract_vocabulary(texts, max_terms=4, max_chars=1000)
    assert len(small) == 4
    assert small[-1] in {"gizmo", "doohickey", "thingamajig"}
    assert len(" ".join(extract_vocabulary(texts, max_chars=50))) <= 50
    # Either kind takes what the other leaves.
    assert len(extract_vocabulary(["The gizmo and the doohickey."], max_terms=2)) == 2


def test_nothing_to_gather() -> None:
    assert extract_vocabulary([]) == []
    assert extract_vocabulary(["", "The cat sat on the mat. 12 34."]) == []
    assert hotwords([]) is None
    assert hotwords(["Kelvington Island", "pier"]) == "Kelvington Island pier"


async def test_refresh_keeps_the_collections_vocabulary_in_the_store() -> None:
    store = InMemoryStore(lite_settings(Path("unused"), embedding_dim=SMALL_DIM))
    await store.upsert("ferries", [chunk(FERRY, "ferry"), chunk("The impeller hums.", "pump")])
    terms = await refresh_vocabulary(store, "ferries")
    assert terms[:4] == ["Harwick", "Harwick Sound Ferries", "Kelvington Island", "Port Ellery"]
    assert "impeller" in terms
    assert await store.vocabulary("ferries") == terms

    await store.delete("ferries", ids=[chunk("The impeller hums.", "pump").id])
    assert "impeller" not in await refresh_vocabulary(store, "ferries")
    # A collection that is gone gets none, and none is made.
    assert await refresh_vocabulary(store, "missing") == []
    assert [c.name for c in await store.collections()] == ["ferries"]
    assert VOCABULARY_CHUNKS <= 16_384
