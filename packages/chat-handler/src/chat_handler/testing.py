"""Pytest fixtures for code that stores knowledge in Milvus: real Milvus Lite, no mocks.

Load with ``pytest_plugins = ["chat_handler.testing"]``.

- ``milvus_settings``: Settings whose Milvus is a fresh Milvus Lite database in the
  test's ``tmp_path`` (384 dimensions, the embeddings model's).
- ``milvus_store``: a :class:`~chat_handler.stores.MilvusStore` on those
  settings, closed after the test (which stops the embedded server and frees the file).
- ``milvus_server_uri``: ``http://127.0.0.1:PORT`` of a Milvus-protocol gRPC server
  (Milvus Lite's own server) running in this process, to test the server code path
  (``MILVUS_URI=http://...``) without a Milvus deployment.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_handler.stores import KnowledgeRecord, MilvusStore
from handler_base.settings import Settings

SMALL_DIM = 8
"""Dimension of the hand-made vectors of store tests: small, so they run fast."""


def axis(i: int, *, tilt: float = 0.0, dim: int = SMALL_DIM) -> list[float]:
    """The unit vector along axis ``i``, optionally tilted towards the next axis."""
    vector = [0.0] * dim
    vector[i] = 1.0
    vector[(i + 1) % dim] = tilt
    return vector


def chunk_record(
    text: str, doc_id: str = "doc", index: int = 0, *, along: int = 0, **metadata: Any
) -> KnowledgeRecord:
    """A record of :data:`SMALL_DIM` dimensions pointing along axis ``along``."""
    return KnowledgeRecord(
        text=text, vector=axis(along), doc_id=doc_id, chunk_index=index, metadata=metadata
    )


def lite_settings(data_dir: Path, *, embedding_dim: int = 384) -> Settings:
    """Settings for a Milvus Lite database under ``data_dir``, whatever the environment says."""
    return Settings(
        data_dir=data_dir,
        milvus_uri=None,
        milvus_host=None,
        milvus_token=None,
        embedding_dim=embedding_dim,
    )


@contextlib.contextmanager
def milvus_protocol_server(data_dir: Path) -> Iterator[str]:
    """Run a Milvus-protocol gRPC server (Milvus Lite's) on a free loopback port.

    Args:
        data_dir: The folder the server keeps its database in.

    Yields:
        The server's URI, ``http://127.0.0.1:PORT``.
    """
    server_module = importlib.import_module("milvus_lite.adapter.grpc.server")
    server, database, port = server_module.start_server_in_thread(
        data_dir=str(data_dir), host="127.0.0.1", port=0
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=0)
        database.close()


@pytest.fixture
def milvus_settings(tmp_path: Path) -> Settings:
    """Settings whose Milvus is a fresh Milvus Lite database in ``tmp_path``."""
    return lite_settings(tmp_path / "data")


@pytest.fixture
def milvus_store(milvus_settings: Settings) -> Iterator[MilvusStore]:
    """A knowledge store on a fresh Milvus Lite database, closed after the test."""
    store = MilvusStore(milvus_settings)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def milvus_server_uri(tmp_path: Path) -> Iterator[str]:
    """The URI of a Milvus-protocol server running in this process for the test."""
    with milvus_protocol_server(tmp_path / "milvus-server") as uri:
        yield uri
