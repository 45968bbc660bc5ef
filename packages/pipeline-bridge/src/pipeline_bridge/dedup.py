"""Replies given, kept in a JetStream key-value bucket, so a repeated request is answered once.

The bucket lives in the NATS server, not in a bridge actor, so it survives actor restarts
and is shared by every bridge. Each request has one key (a hash of its subject and its
id). A bridge that starts on a request first *claims* the key (an atomic create of a
``pending`` record naming the stream message it handles); when done it stores the
reply (``done``) before sending it. A repeat that finds ``done`` gets the stored reply;
one that finds ``pending`` waits for it, unless its bridge has not said it is still
working for longer than the ack wait (it died): then the work is taken over. A
redelivery of a message whose reply was already sent (its ack was lost) sends nothing
again, and one that reaches the bridge still handling it waits for that bridge
(:func:`next_step` decides).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from typing import Literal

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)


class StoredReply(BaseModel):
    """The record of one request in the bucket."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["pending", "done"]
    stream_seq: int = 0
    """The stream message whose delivery handles the request (``pending``)."""
    alive_at: float = 0.0
    """``pending``: when its bridge last said it is still working (Unix time)."""
    data: str = ""
    """The reply's body (``done``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """The reply's headers (``done``; the error headers of an error reply)."""
    sent: bool = False
    """``done``: the reply went to the requester of message ``stream_seq``; a redelivery
    of that message (its ack was lost) must not send it a second time."""

    def encoded(self) -> bytes:
        """The record as bytes for the bucket."""
        return self.model_dump_json().encode()


Step = Literal["nothing", "send_stored", "take_over", "wait"]


def next_step(stored: StoredReply, stream_seq: int, handled_here: bool, ack_wait_s: float) -> Step:
    """What a delivery of message ``stream_seq`` does about the record kept for its request.

    Args:
        stored: The record found in the bucket.
        stream_seq: The stream message being delivered.
        handled_here: This bridge is handling the request, or sending its reply, now.
        ack_wait_s: The consumer's ack wait: a handling bridge says it lives more often.

    Returns:
        ``nothing`` (the reply went out for this very message; only its ack was lost),
        ``send_stored`` (send the kept reply to this delivery's requester),
        ``take_over`` (the bridge that claimed it fell silent: it died), or
        ``wait`` (it is being handled or answered, here or by a live bridge). While this
        bridge handles it, even a kept reply is waited for: it is stored before it is sent
        and noted sent after, and sending it from here too would answer twice.
    """
    if handled_here:
        return "wait"
    if stored.state == "done":
        return "nothing" if stored.stream_seq == stream_seq and stored.sent else "send_stored"
    if time.time() - stored.alive_at > ack_wait_s:
        return "take_over"
    return "wait"


def reply_key(subject: str, request_key: str) -> str:
    """The bucket key of a request: a hash, since ids may hold any printable character."""
    return hashlib.sha256(f"{subject}\n{request_key}".encode()).hexdigest()


class ReplyStore:
    """The replies bucket; make it with :meth:`open`."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, ttl_s: float) -> ReplyStore:
        """Open the bucket, creating it (file storage, one value per key) when missing."""
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                kv = await js.create_key_value(
                    KeyValueConfig(bucket=bucket, ttl=ttl_s, history=1, storage=StorageType.FILE)
                )
                logger.info("created the replies bucket %s (replies kept %g s)", bucket, ttl_s)
            except nats.js.errors.BadRequestError:
                kv = await js.key_value(bucket)  # another bridge created it meanwhile
        return cls(kv)

    async def get(self, key: str) -> StoredReply | None:
        """The record of ``key``, or None."""
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if not entry.value:
            return None
        return StoredReply.model_validate_json(entry.value)

    async def claim(self, key: str, stream_seq: int) -> StoredReply | None:
        """Claim ``key`` for stream message ``stream_seq``.

        Returns:
            None when the claim is made; the record already there otherwise.
        """
        record = StoredReply(state="pending", stream_seq=stream_seq, alive_at=time.time())
        try:
            await self._kv.create(key, record.encoded())
        except nats.js.errors.KeyWrongLastSequenceError:
            found = await self.get(key)
            return found if found is not None else await self.claim(key, stream_seq)
        return None

    async def hold(self, key: str, stream_seq: int) -> None:
        """Claim ``key`` for message ``stream_seq`` whatever is there, or say it still works."""
        record = StoredReply(state="pending", stream_seq=stream_seq, alive_at=time.time())
        await self._kv.put(key, record.encoded())

    async def finish(
        self, key: str, stream_seq: int, data: bytes, headers: dict[str, str] | None
    ) -> StoredReply:
        """Store the reply of ``key``, given by message ``stream_seq`` (not yet sent)."""
        record = StoredReply(
            state="done", stream_seq=stream_seq, data=data.decode(), headers=dict(headers or {})
        )
        await self._kv.put(key, record.encoded())
        return record

    async def mark_sent(self, key: str, record: StoredReply) -> None:
        """Note that ``record``'s reply was sent to its requester."""
        await self._kv.put(key, record.model_copy(update={"sent": True}).encoded())

    async def release(self, key: str) -> None:
        """Drop the claim on ``key``: the request was not answered for good."""
        with contextlib.suppress(nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            await self._kv.delete(key)
