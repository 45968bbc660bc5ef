import pytest

from chat_handler.rag.prompt import (
    MESSAGE_OVERHEAD_CHARS,
    PROMPT_TEMPLATE,
    REWRITE_INSTRUCTION,
    PromptBudget,
    build_prompt,
    rewrite_prompt,
    standalone_question,
)
from handler_base.messages import HistoryMessage, Source

INSTRUCTIONS = PROMPT_TEMPLATE.removesuffix("{passages}")


def source(n: int, size: int = 100) -> Source:
    return Source(id=f"s{n}", text=f"passage {n} " + "x" * size, score=1.0 / n)


def history(n: int, size: int = 100) -> list[HistoryMessage]:
    roles = ("user", "assistant")
    return [HistoryMessage(role=roles[i % 2], content=f"turn {i} " + "y" * size) for i in range(n)]


def test_everything_fits_in_a_large_budget() -> None:
    prompt = build_prompt("What?", [source(1), source(2)], history(2))
    roles = [m.role for m in prompt.messages]
    assert roles == ["system", "user", "assistant", "user"]
    system = prompt.messages[0].content
    assert system.startswith(f"{INSTRUCTIONS}[1] passage 1 ")
    assert "\n\n[2] passage 2 " in system
    assert prompt.messages[-1].content == "What?"
    assert [s.id for s in prompt.sources] == ["s1", "s2"]
    assert (prompt.dropped_history, prompt.dropped_sources) == (0, 0)


def test_the_system_prompt_asks_for_citations_and_honesty() -> None:
    assert "[1]" in INSTRUCTIONS
    assert "don't know" in INSTRUCTIONS


def test_a_template_places_the_passages_where_it_says() -> None:
    template = "Context:\n{passages}\n\nAnswer in French, and {braces} stay as written."
    prompt = build_prompt("Q?", [source(1, 5), source(2, 5)], template=template)
    assert prompt.messages[0].content == (
        "Context:\n[1] passage 1 xxxxx\n\n[2] passage 2 xxxxx"
        "\n\nAnswer in French, and {braces} stay as written."
    )


def test_oldest_history_goes_first_then_lowest_ranked_passages() -> None:
    budget = PromptBudget(context_tokens=600, answer_tokens=100, chars_per_token=3.0)  # 1500
    sources = [source(i, 300) for i in range(1, 7)]
    prompt = build_prompt("Q?", sources, history(6, 300), budget)
    # Six passages of ~310 chars are over the budget alone: all history goes first.
    assert prompt.dropped_history == 6
    assert 0 < prompt.dropped_sources < 6
    assert prompt.sources == sources[: 6 - prompt.dropped_sources]
    assert sum(len(m.content) for m in prompt.messages) <= budget.prompt_chars
    one_more = build_prompt("Q?", sources[: len(prompt.sources) + 1], budget=budget)
    assert one_more.dropped_sources == 1


def test_newest_history_is_kept_when_there_is_room() -> None:
    budget = PromptBudget(context_tokens=1000, answer_tokens=100, chars_per_token=3.0)  # 2700
    prompt = build_prompt("Q?", [source(1, 300)], history(10, 300), budget)
    assert 0 < prompt.dropped_history < 10
    kept = [m.content for m in prompt.messages[1:-1]]
    assert kept == [m.content for m in history(10, 300)[prompt.dropped_history :]]
    assert prompt.dropped_sources == 0


def test_no_passages_fit_gives_an_empty_passage_list_and_the_question() -> None:
    budget = PromptBudget(context_tokens=100, answer_tokens=10, chars_per_token=3.0)
    prompt = build_prompt("Q?", [source(1, 500)], budget=budget)
    assert prompt.sources == []
    assert prompt.messages[0].content == INSTRUCTIONS
    assert prompt.messages[-1].content == "Q?"


def test_budget_in_characters() -> None:
    assert PromptBudget(context_tokens=2048, answer_tokens=256).prompt_chars == 5376


# --- the follow-up rewrite ---------------------------------------------------------------


def test_a_rewrite_prompt_holds_the_conversation_and_the_follow_up() -> None:
    turns = [
        HistoryMessage(role="user", content="When does the ferry to Kelvington leave?"),
        HistoryMessage(role="assistant", content="At 8 a.m. from pier 3 [1]."),
    ]
    messages = rewrite_prompt("And how much is a ticket?", turns)
    assert messages is not None
    assert [m.role for m in messages] == ["user"]
    content = messages[0].content
    assert "User: When does the ferry to Kelvington leave?\nAssistant: At 8 a.m." in content
    assert "Follow-up question: And how much is a ticket?" in content


def test_no_history_needs_no_rewrite() -> None:
    assert rewrite_prompt("What?", []) is None


@pytest.mark.parametrize("query_size", [10, 1000, 4000])
def test_the_rewrite_never_sends_more_than_the_budget(query_size: int) -> None:
    budget = PromptBudget(context_tokens=1024, answer_tokens=128)
    query = "q" * query_size
    messages = rewrite_prompt(query, history(40, size=700), budget)
    if messages is None:  # the question alone fills the budget: it is searched as it is
        assert query_size + len(REWRITE_INSTRUCTION) > budget.prompt_chars - 200
        return
    content = messages[0].content
    assert len(content) + MESSAGE_OVERHEAD_CHARS <= budget.prompt_chars
    assert "turn 39 " in content  # the newest turn is kept, the oldest go first
    assert "turn 0 " not in content


def test_a_long_last_turn_is_cut_to_fit() -> None:
    budget = PromptBudget(context_tokens=512, answer_tokens=128)
    messages = rewrite_prompt("And its price?", history(1, size=5000), budget)
    assert messages is not None
    assert "User: turn 0 yyy" in messages[0].content
    assert len(messages[0].content) + MESSAGE_OVERHEAD_CHARS <= budget.prompt_chars


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "How much is a ticket for the Kelvington ferry?",
            "How much is a ticket for the Kelvington ferry?",
        ),
        ('Standalone question: "What does the X7 weigh?"\n', "What does the X7 weigh?"),
        ("\n\n  What does the X7 weigh?\nIt weighs 890 g.", "What does the X7 weigh?"),
        ("", "And its weight?"),
        ("x" * 1000, "And its weight?"),
    ],
)
def test_the_standalone_question_is_the_replys_first_line(reply: str, expected: str) -> None:
    assert standalone_question(reply, "And its weight?") == expected
