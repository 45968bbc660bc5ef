"""Pytest fixtures for code that stores knowledge in Milvus: real Milvus Lite, no mocks.

Load with ``pytest_plugins = ["handler_base.testing.milvus_fixtures"]``.

- ``milvus_settings``: Settings whose Milvus is a fresh Milvus Lite database in the
  test's ``tmp_path`` (384 dimensions, the embeddings model's).
- ``milvus_client``: a :class:`~handler_base.clients.milvus.MilvusClient` on those
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

import pytest

from handler_base.clients.milvus import MilvusClient
from handler_base.settings import Settings


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
def milvus_client(milvus_settings: Settings) -> Iterator[MilvusClient]:
    """A knowledge store on a fresh Milvus Lite database, closed after the test."""
    client = MilvusClient(milvus_settings)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def milvus_server_uri(tmp_path: Path) -> Iterator[str]:
    """The URI of a Milvus-protocol server running in this process for the test."""
    with milvus_protocol_server(tmp_path / "milvus-server") as uri:
        yield uri
