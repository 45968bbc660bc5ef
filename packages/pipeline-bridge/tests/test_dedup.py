"""What a delivery does about the record its request already has in the replies bucket."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pipeline_bridge.dedup import Step, StoredReply, next_step

ACK_WAIT_S = 3.0
SEQ = 7


def pending(silent_s: float, seq: int = SEQ) -> Callable[[], StoredReply]:
    """A claim whose bridge last said it works ``silent_s`` before the test runs."""
    return lambda: StoredReply(state="pending", stream_seq=seq, alive_at=time.time() - silent_s)


def done(sent: bool, seq: int = SEQ) -> Callable[[], StoredReply]:
    return lambda: StoredReply(state="done", stream_seq=seq, data="{}", sent=sent)


@pytest.mark.parametrize(
    ("stored", "handled_here", "step"),
    [
        # The reply went out for this very message: only its ack was lost.
        (done(sent=True), False, "nothing"),
        # Stored and not noted sent by a bridge that is gone: send it (at least once).
        (done(sent=False), False, "send_stored"),
        # The same request sent again as another message: it gets the kept reply.
        (done(sent=True, seq=SEQ + 1), False, "send_stored"),
        # Being answered here (stored, not yet noted sent): sending it too would answer twice.
        (done(sent=False), True, "wait"),
        (done(sent=True, seq=SEQ + 1), True, "wait"),
        # Claimed by a bridge that still says it works, or by this one: wait for it.
        (pending(silent_s=0.5), False, "wait"),
        (pending(silent_s=60), True, "wait"),
        # Claimed by a bridge silent for longer than the ack wait: it died.
        (pending(silent_s=60), False, "take_over"),
    ],
)
def test_next_step(stored: Callable[[], StoredReply], handled_here: bool, step: Step) -> None:
    assert next_step(stored(), SEQ, handled_here, ACK_WAIT_S) == step
