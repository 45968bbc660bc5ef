"""The RAG prompt: numbered passages and the conversation, within the LLM's context.

The budget is counted in characters, as a proxy for tokens (``chars_per_token``); the
default of 3 characters a token is cautious for English, so a prompt that fits here
fits the model. When everything does not fit, the oldest history goes first, then the
lowest-ranked passages. The system prompt and the question always stay.

The system prompt is a template (``RAGConfig.prompt_template``, a field of the chat
application's Serve config): its ``{passages}`` is replaced by the numbered passages.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from handler_base.inference import ChatMessage
from handler_base.messages import HistoryMessage, Source

PASSAGES_FIELD = "{passages}"
"""Where a prompt template takes the numbered passages."""

PROMPT_TEMPLATE = (
    "Answer the question using only the numbered passages below. Cite the passages you "
    "use by their number, like [1]. If the passages do not contain the answer, say that "
    "you don't know.\n\nPassages:\n" + PASSAGES_FIELD
)
"""Tells the model to answer from the passages, cite them, and admit when it can't."""

REWRITE_INSTRUCTION = (
    "Rewrite the follow-up question as one standalone question that names what it refers "
    "to, using the conversation. Do not answer it. Reply with the question only."
)
"""The follow-up rewrite's instruction, after the conversation and the question."""
REWRITE_FRAME = "Conversation:\n{transcript}\n\nFollow-up question: {query}\n\n{instruction}"

MESSAGE_OVERHEAD_CHARS = 16
"""Characters counted for each message's framing (a chat template adds a few tokens)."""


class PromptBudget(BaseModel):
    """How much of the LLM's context a prompt may fill.

    Attributes:
        context_tokens: The model's context window (prompt and answer together).
        answer_tokens: Tokens kept free for the answer.
        chars_per_token: Characters counted as one token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    context_tokens: int = Field(default=2048, ge=64)
    answer_tokens: int = Field(default=256, ge=1)
    chars_per_token: float = Field(default=3.0, gt=0)

    @property
    def prompt_chars(self) -> int:
        """Characters the prompt may hold."""
        return max(int((self.context_tokens - self.answer_tokens) * self.chars_per_token), 0)


class Prompt(BaseModel):
    """A built prompt and the passages it holds.

    Attributes:
        messages: The chat messages to send to the LLM.
        sources: The passages in the prompt, in order: ``[n]`` is ``sources[n - 1]``.
        dropped_history: How many of the oldest history messages did not fit.
        dropped_sources: How many of the lowest-ranked passages did not fit.
    """

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage]
    sources: list[Source]
    dropped_history: int = 0
    dropped_sources: int = 0


def format_passages(sources: Sequence[Source]) -> str:
    """The passages as ``[1] text`` blocks, one blank line apart."""
    return "\n\n".join(f"[{n}] {source.text.strip()}" for n, source in enumerate(sources, 1))


def system_message(template: str, sources: Sequence[Source]) -> str:
    """The system message: ``template`` with the numbered passages in its ``{passages}``."""
    return template.replace(PASSAGES_FIELD, format_passages(sources))


def build_prompt(
    query: str,
    sources: Sequence[Source],
    history: Sequence[HistoryMessage] = (),
    budget: PromptBudget | None = None,
    template: str = PROMPT_TEMPLATE,
) -> Prompt:
    """Build the chat messages of a RAG answer within ``budget``.

    The messages are the system prompt holding the numbered passages (best first),
    the history (oldest first), then the question as the last user message (the
    135M-parameter cpu model answers from the passages far more often in this layout
    than with the passages in the user message). Over budget, the
    oldest history messages are dropped first, then the lowest-ranked passages. A
    question too long for the budget on its own is sent anyway: the LLM answers that
    with ``too_large``.

    Args:
        query: The user's question.
        sources: The passages, best first.
        history: The earlier turns, oldest first.
        budget: The context budget; the defaults of :class:`PromptBudget` when None.
        template: The system prompt, with ``{passages}`` where the passages go.

    Returns:
        The messages and the passages they hold.
    """
    budget = budget or PromptBudget()
    kept_history = list(history)
    kept_sources = list(sources)

    def size() -> int:
        return (
            len(system_message(template, kept_sources))
            + sum(len(m.content) for m in kept_history)
            + len(query)
            + MESSAGE_OVERHEAD_CHARS * (len(kept_history) + 2)
        )

    while size() > budget.prompt_chars and (kept_history or kept_sources):
        if kept_history:
            kept_history.pop(0)
        else:
            kept_sources.pop()
    messages = [
        ChatMessage(role="system", content=system_message(template, kept_sources)),
        *(ChatMessage(role=m.role, content=m.content) for m in kept_history),
        ChatMessage(role="user", content=query),
    ]
    return Prompt(
        messages=messages,
        sources=kept_sources,
        dropped_history=len(history) - len(kept_history),
        dropped_sources=len(sources) - len(kept_sources),
    )


def rewrite_prompt(
    query: str, history: Sequence[HistoryMessage], budget: PromptBudget | None = None
) -> list[ChatMessage] | None:
    """The messages that ask the LLM to make a follow-up question standalone.

    The conversation goes in one user message as a transcript (small models rewrite it
    far more reliably than they do a chat they are part of). Within ``budget``, the
    oldest turns are dropped first; the last one kept is cut to what is left.

    Returns:
        The messages, or None when there is no history or the question alone fills the
        budget (then the question is searched as it is).
    """
    budget = budget or PromptBudget()
    frame = REWRITE_FRAME.format(transcript="", query=query, instruction=REWRITE_INSTRUCTION)
    room = budget.prompt_chars - len(frame) - MESSAGE_OVERHEAD_CHARS
    turns: list[str] = []
    for message in reversed([m for m in history if m.role != "system"]):
        line = f"{message.role.capitalize()}: {message.content.strip()}"
        if len(line) + 1 > room:
            if not turns and room > MESSAGE_OVERHEAD_CHARS:
                turns.append(line[: room - 1])
            break
        turns.append(line)
        room -= len(line) + 1
    if not turns:
        return None
    content = REWRITE_FRAME.format(
        transcript="\n".join(reversed(turns)), query=query, instruction=REWRITE_INSTRUCTION
    )
    return [ChatMessage(role="user", content=content)]


def standalone_question(reply: str, query: str) -> str:
    """The rewritten question from the LLM's reply; ``query`` when the reply is unusable.

    The first non-empty line, without a label ("Standalone question:") or quotes.
    """
    for line in reply.splitlines():
        line = line.strip().strip('"').strip()
        if ":" in line[:30] and line.split(":", 1)[0].lower().endswith("question"):
            line = line.split(":", 1)[1].strip().strip('"').strip()
        if line:
            return line if len(line) <= max(4 * len(query), 300) else query
    return query
