"""The answer checker on tables of cases: the ways of writing one fact, negation both
ways, refusals, citations and loops. No cluster."""

import pytest

from aictl.evaluation.answer_check import (
    Fact,
    canonical,
    citations,
    citations_valid,
    is_looping,
    is_refusal,
    judge_answer,
    states_any,
    states_fact,
)
from chat_handler.rag import NO_SOURCES_ANSWER

# Each group writes one thing in several ways: all have the same normal form.
SAME = [
    (
        "5,200 mAh",
        "5200 mAh",
        "5200mAh",
        "5 200 mAh",
        "5\u202f200 mAh",
        "five thousand two hundred mAh",
    ),
    ("€1,149", "1149 euros", "EUR 1,149", "1,149 €", "1149 EUR", "€ 1149", "1,149 Euro"),
    ("3-year", "3 years", "three years", "three-year", "3 yrs"),
    ("8 a.m.", "8 am", "8am", "8:00", "08:00", "8 A.M.", "8 in the morning", "8 o'clock"),
    ("6 p.m.", "6pm", "18:00", "6:00 p.m.", "6 in the evening"),
    ("12 noon", "noon", "12:00", "12 p.m."),
    ("€0.20", "0.20 euros", "20 cents", "€0.2", "EUR 0.20"),
    ("€12.50", "12.5 euros", "12.50 EUR"),
    ("14 March 2025", "March 14, 2025", "March 14th 2025", "14th of March 2025", "2025-03-14"),
    ("9,000 litres per hour", "9000 l/h", "9000 L/h", "9,000 liters an hour", "9000 l per hour"),
    ("35 °C", "35°C", "35 degrees", "35 degrees Celsius", "35 ºC"),
    ("7.9 kg", "7.9kg", "7.90 kilograms", "7.9 kilos"),
    ("20 milliseconds", "20 ms", "20ms", "twenty milliseconds"),
    ("70%", "70 %", "70 percent", "70 per cent", "seventy percent"),
    ("twice", "2 times", "two times"),
    ("first Thursday", "1st Thursday"),
    ("second Tuesday", "2nd Tuesday"),
    ("25 seconds", "25 s", "25-second", "twenty-five seconds", "25 secs"),
    ("isn't covered", "is not covered", "is n't covered", "is not covered"),
    ("cannot be renewed", "can't be renewed", "can not be renewed", "can\u2019t be renewed"),
    ("-10 °C", "minus 10 degrees", "\u221210 °C"),
    ("1.5 hours", "1.5 h", "1.50 hours", "1.5 hrs"),
    ("288 Wh", "288Wh", "288 watt-hours", "288 watt hours"),
    ("1.2 kWh", "1.2 kilowatt-hours", "1.2kWh"),
    ("Tuesday", "Tuesdays"),
]


@pytest.mark.parametrize("forms", SAME, ids=[forms[0] for forms in SAME])
def test_the_ways_of_writing_one_thing_have_one_normal_form(forms: tuple[str, ...]) -> None:
    assert {canonical(form) for form in forms} == {canonical(forms[0])}, [
        (form, canonical(form)) for form in forms
    ]


DIFFERENT = [
    ("3 years", "13 years"),
    ("8 a.m.", "8 p.m."),
    ("8:00", "20:00"),
    ("€1,149", "€1,194"),
    ("5,200 mAh", "52,000 mAh"),
    ("first year", "1 year"),
    ("12.5 km", "125 km"),
    ("14 March 2025", "14 March 2024"),
    ("7 m", "7 min"),
]


@pytest.mark.parametrize(("one", "other"), DIFFERENT)
def test_different_things_stay_different(one: str, other: str) -> None:
    assert canonical(one) != canonical(other)


# (answer, fact, stated?)
FACT_CASES: list[tuple[str, Fact, bool]] = [
    # numbers and units, as the answer may write them
    ("The battery holds 5,200 mAh [1].", "5200 mAh", True),
    ("It has a 5200mAh battery.", "5,200 mAh", True),
    ("The Trek 600 Solar Bundle costs EUR 1,149.", "€1,149", True),
    ("It is sold for 1149 euros.", "€1,149", True),
    ("The price is 1,149 €.", "1149 euros", True),
    ("The price is €1,194.", "€1,149", False),
    ("It has a 3-year warranty.", "3 years", True),
    ("The warranty lasts three years from purchase.", "3 years", True),
    ("The warranty lasts 13 years.", "3 years", False),
    ("The desk opens at 8 a.m. on weekdays.", "8:00", True),
    ("It opens at 08:00.", "8 a.m.", True),
    ("It opens at 8 in the evening.", "8 a.m.", False),
    ("It opens at 8.", "8 a.m.", False),
    ("A late fee of 20 cents a day applies.", "€0.20", True),
    ("The pump moves 9000 L/h at most.", "9,000 litres per hour", True),
    ("The pump moves 6,500 litres per hour.", "9,000 litres per hour", False),
    ("The shot takes 25 to 30 seconds.", "25 seconds", False),
    ("It heats up in 25 seconds.", "25 seconds", True),
    ("Notice published on June 12th, 2024.", "12 June 2024", True),
    ("Register by 31/01/2026.", "31 January 2026", False),
    ("A stepped adapter: 1 inch or 1.5 inch hoses.", "1.5 inch", True),
    ("It weighs 4.3kg.", "4.3 kg", True),
    ("It weighs 4.35 kg.", "4.3 kg", False),
    ("It can be renewed two times.", "twice", True),
    ("Updates come out on the 1st Thursday of each month.", "first Thursday", True),
    ("Serial numbers TK6-2403-00001 to TK6-2403-05200.", "TK6-2403-00001", True),
    ("The part number is SP40-IMP-07.", "SP40-IMP-07", True),
    ("The part number is SP40-IMP-70.", "SP40-IMP-07", False),
    # a fact of several parts: all of them
    ("Closed from 15 March to 31 July.", ("15 March", "31 July"), True),
    ("Closed from March 15 until July 31st.", ("15 March", "31 July"), True),
    ("Closed from 15 March.", ("15 March", "31 July"), False),
    ("Open on Saturday from 9 a.m. to 1 p.m.", ("9:00", "13:00"), True),
    ("Open on Saturday from 9:00 to 13:00.", ("9 a.m.", "1 p.m."), True),
    ("Open on Saturday from 9 a.m. to 1 a.m.", ("9 a.m.", "1 p.m."), False),
    # a fact that requires a negation
    ("A battery at 75% is not replaced under warranty.", "not replaced", True),
    ("No: it will not be replaced, as that is normal ageing.", "not replaced", True),
    ("It isn't replaced.", "not replaced", True),
    ("The battery is never replaced for that.", "not replaced", True),
    ("The battery is replaced free of charge.", "not replaced", False),
    ("Cosmetic damage is not covered [2].", "not covered", True),
    ("Cosmetic damage isn't covered by the warranty.", "is not covered", True),
    ("Cosmetic damage is covered by the warranty.", "is not covered", False),
    ("DVDs can't be renewed.", "cannot be renewed", True),
    ("DVDs cannot be renewed.", "cannot be renewed", True),
    ("DVDs can be renewed once.", "cannot be renewed", False),
    ("The Trek 300 is not affected by the recall.", "not affected", True),
    ("The Trek 300 is affected by the recall.", "not affected", False),
    # a positive fact that the answer negates right there
    ("The battery is not replaced.", "replaced", False),
    ("It is not covered by the warranty.", "covered by the warranty", False),
    ("It is replaced free of charge.", "replaced", True),
    ("No, the ferry does not leave from Pier 3.", "Pier 3", False),
    ("It doesn't leave from Pier 5 but from Pier 3.", "Pier 3", True),
    ("No, it is replaced in the first year.", "replaced", True),
    ("The solar cable is not included; the car cable is included.", "included", True),
    # whole tokens only
    ("Pier 30 is at the far end.", "Pier 3", False),
    ("It costs €449.", "€44", False),
]


@pytest.mark.parametrize(("answer", "fact", "stated"), FACT_CASES)
def test_states_fact(answer: str, fact: Fact, stated: bool) -> None:
    assert states_fact(answer, fact) is stated


def test_any_one_fact_is_enough() -> None:
    assert states_any("It weighs 4.3 kg.", ["4.3 kg", "4300 g"])
    assert states_any("It weighs 4300 g.", ["4.3 kg", "4300 g"])
    assert not states_any("It weighs 7.9 kg.", ["4.3 kg", "4300 g"])


def test_a_fact_that_is_only_a_negation_is_refused() -> None:
    with pytest.raises(ValueError, match="words after its negation"):
        states_fact("not", "not")


REFUSALS = [
    "I don't know.",
    "I do not know the answer to that.",
    "I couldn't find the answer to that in the knowledge base.",
    NO_SOURCES_ANSWER,
    "I found nothing on that in the knowledge base.",
    "The passages do not mention a captain.",
    "The provided passages don't say what the wifi password is.",
    "The context does not include the captain's name.",
    "There is no information about the wifi password in the passages.",
    "There's no mention of a password [1].",
    "The height of the lighthouse is not mentioned.",
    "The ferry's speed is not given in the provided documents.",
    "I'm sorry, but I can't answer that from these passages.",
    "I am unable to find that information.",
    "I'm not sure; the documents don't say.",
    "That information is not available in the knowledge base.",
]

NOT_REFUSALS = [
    "The captain of the MV Tern is Jack Black [1].",
    "The wifi password is KELV2025.",
    "The solar cable is not included; it is sold separately for €19 [1].",
    "Cars are not carried on the Marren Point route [1].",
    "Water damage is not covered by the warranty.",
    "No, the Trek 300 is not affected by the recall [1].",
    "DVDs cannot be renewed.",
    "The lighthouse is 112 m above the sea.",
    "Dogs on a lead travel free; there is no charge for them.",
]


@pytest.mark.parametrize("answer", REFUSALS)
def test_refusals_are_detected(answer: str) -> None:
    assert is_refusal(answer)


@pytest.mark.parametrize("answer", NOT_REFUSALS)
def test_answers_are_not_refusals(answer: str) -> None:
    assert not is_refusal(answer)


@pytest.mark.parametrize(
    ("answer", "numbers"),
    [
        ("No citation at all.", []),
        ("One [1].", [1]),
        ("Two [1][3] and [2].", [1, 3, 2]),
        ("A list [1, 2] and [3; 4].", [1, 2, 3, 4]),
        ("A range [2-4].", [2, 3, 4]),
        ("An en dash range [1\u20132].", [1, 2]),
        ("Not a citation: [a] [x1] [].", []),
    ],
)
def test_citations(answer: str, numbers: list[int]) -> None:
    assert citations(answer) == numbers


def test_citations_must_name_a_source_that_was_given() -> None:
    assert citations_valid("It is 4.3 kg [1][3].", 3)
    assert citations_valid("No citation.", 0)
    assert not citations_valid("It is 4.3 kg [4].", 3)
    assert not citations_valid("It is 4.3 kg [0].", 3)
    assert not citations_valid("It is 4.3 kg [1].", 0)


LOOPING = [
    "The Skylark Robotics support is a Skylark drone. The Skylark Robotics support is a "
    "Skylark drone. The Skylark Robotics support is a Skylark drone.",
    "It costs €449 and it costs €449 and it costs €449 and it costs €449",
    "the the the the the the the the the the the the",
    # by the rule a list that repeats four words three times loops too
    "from Pier 3 at 6:45, from Pier 3 at 8:00, from Pier 3 at 10:30",
]
NOT_LOOPING = [
    "The Trek 300 costs €449 [1]. The Trek 600 costs €849 [2].",
    # a phrase twice is not a loop
    "It leaves from Pier 3. In winter it also leaves from Pier 3 at 7:15.",
    # three words repeated are not a phrase of four
    "Pier 3 at 6:45, Pier 3 at 8:00, Pier 3 at 10:30",
    "",
]


@pytest.mark.parametrize("answer", LOOPING)
def test_looping_answers(answer: str) -> None:
    assert is_looping(answer)


@pytest.mark.parametrize("answer", NOT_LOOPING)
def test_answers_that_do_not_loop(answer: str) -> None:
    assert not is_looping(answer)


def test_the_verdicts() -> None:
    right = judge_answer("The Trek 300 weighs 4.3 kg [1].", 5, ["4.3 kg"])
    assert (right.verdict, right.refused, right.citations, right.citations_valid) == (
        "right",
        False,
        (1,),
        True,
    )
    assert judge_answer("It weighs 7.9 kg [1].", 5, ["4.3 kg"]).verdict == "wrong"
    assert judge_answer("I don't know.", 5, ["4.3 kg"]).verdict == "refused"
    # a hedge that still states the fact is right
    assert judge_answer("I'm not sure, but it is 4.3 kg.", 5, ["4.3 kg"]).verdict == "right"
    assert judge_answer("The passages do not say.", 5, None).verdict == "refused"
    assert judge_answer(NO_SOURCES_ANSWER, 0, None).verdict == "refused"
    invented = judge_answer("The captain is Jack Black [7].", 5, None)
    assert (invented.verdict, invented.citations_valid) == ("invented", False)
    assert judge_answer("a b c d " * 3, 1, None).looping
