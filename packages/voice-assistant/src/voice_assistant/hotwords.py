"""The words Whisper listens for: each collection's vocabulary, kept for a short while.

The chat deployment gathers a collection's names and rare terms at ingest
(``GET /chat/knowledge/collections/{name}/vocabulary``). :class:`HotwordsCache` asks it
for them once per collection and ``ttl_s``, and passes them to Whisper as faster-whisper's
``hotwords``, which makes "Kelvington Island" heard as such rather than as "Covington
Island". Per request it costs nothing once the collection's words are known:

- known and fresh: returned at once;
- known but older than ``ttl_s``: returned at once, and fetched again in the background;
- not known yet: fetched, waiting at most ``wait_s`` (then none this time; the fetch goes
  on and serves the next request).

A knowledge base that is down or slow never stops the voice app: the request goes on
with the words it last had, or none, and it is logged once (and once when it answers
again). A collection that does not exist has no words.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from handler_base.clients import KnowledgeClient
from handler_base.errors import NotFoundError, PlatformError

logger = logging.getLogger(__name__)

DEFAULT_TTL_S: Final = 30.0
DEFAULT_WAIT_S: Final = 1.0
MAX_COLLECTIONS: Final = 256
"""Collections whose words are kept at once (the least recently asked go first)."""


@dataclass(frozen=True)
class _Entry:
    hotwords: str | None
    fetched_at: float


class HotwordsCache:
    """Each collection's hotwords, from the knowledge base, kept ``ttl_s`` (module doc)."""

    def __init__(
        self,
        knowledge: KnowledgeClient,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        wait_s: float = DEFAULT_WAIT_S,
        max_collections: int = MAX_COLLECTIONS,
    ) -> None:
        """Keep nothing yet.

        Args:
            knowledge: Reads the vocabularies.
            ttl_s: How long a collection's words are used before they are asked again.
            wait_s: How long a request waits for words not known yet.
            max_collections: Collections kept at once.
        """
        self.knowledge = knowledge
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.max_collections = max_collections
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[str | None]] = {}
        self._failing = False

    async def hotwords(self, collection: str) -> str | None:
        """The collection's terms joined by spaces, as Whisper's ``hotwords``; None for none.

        Never raises for the knowledge base's sake (see the module doc).
        """
        entry = self._entries.get(collection)
        if entry is not None:
            self._entries.move_to_end(collection)
            if time.monotonic() - entry.fetched_at >= self.ttl_s:
                self._fetch(collection)  # in the background; this request uses what it had
            return entry.hotwords
        try:
            return await asyncio.wait_for(asyncio.shield(self._fetch(collection)), self.wait_s)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        """Stop the fetches under way."""
        tasks = list(self._fetching.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _fetch(self, collection: str) -> asyncio.Task[str | None]:
        """The fetch of ``collection``'s words under way, started when there is none."""
        task = self._fetching.get(collection)
        if task is None:
            task = asyncio.create_task(self._read(collection), name=f"hotwords-{collection}")
            self._fetching[collection] = task
            task.add_done_callback(lambda _: self._fetching.pop(collection, None))
        return task

    async def _read(self, collection: str) -> str | None:
        previous = self._entries.get(collection)
        try:
            answer = await self.knowledge.vocabulary(collection)
        except NotFoundError:
            hotwords = None
        except Exception as exc:  # any failure: the voice app goes on without
            if not self._failing:
                self._failing = True
                reason = exc.message if isinstance(exc, PlatformError) else repr(exc)
                logger.warning(
                    "no hotwords for Whisper: the knowledge base's vocabulary could not be "
                    "read (%s); questions are transcribed without them until it answers",
                    reason,
                )
            hotwords = previous.hotwords if previous is not None else None
        else:
            hotwords = " ".join(answer.terms) or None
            if self._failing:
                self._failing = False
                logger.info("the knowledge base answers again: Whisper gets hotwords again")
        self._entries[collection] = _Entry(hotwords, time.monotonic())
        self._entries.move_to_end(collection)
        while len(self._entries) > self.max_collections:
            self._entries.popitem(last=False)
        return hotwords
