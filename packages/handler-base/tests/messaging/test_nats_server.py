"""The test helper itself: a real nats-server started, stopped, restarted and killed."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import nats
import pytest

from handler_base.testing.nats import NatsServer, NatsServerError, find_nats_server

pytestmark = pytest.mark.integration


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_binary_is_found() -> None:
    path = find_nats_server()
    assert path.is_file()
    assert os.access(path, os.X_OK)


def test_binary_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", str(tmp_path / "nats-server"))
    assert find_nats_server() == tmp_path / "nats-server"


def test_start_stop_restart_kill() -> None:
    with NatsServer() as server:
        pid, port, store = server.pid, server.port, server.store_dir
        assert pid is not None
        assert accepts(port)
        assert server.url == f"nats://127.0.0.1:{port}"

        server.restart()
        assert server.pid != pid
        assert server.port == port
        assert server.store_dir == store
        assert accepts(port)

        server.kill()
        assert not server.is_running
        assert server.pid is None
        assert not accepts(port)
        server.start()
        assert accepts(port)
        workdir = server.workdir
    assert not server.is_running
    assert not workdir.exists()


async def test_jetstream_store_survives_restart(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.a", b"x")
    finally:
        await nc.close()
    nats_server.restart()
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().stream_info("KEEP")
        assert info.state.messages == 1
    finally:
        await nc.close()


def test_bad_config_fails_with_the_servers_words() -> None:
    server = NatsServer(config="this is { not valid")
    with pytest.raises(NatsServerError, match=r"(?s)exited at start.*Parse error"):
        server.start()
    server.close()


def test_extra_args_are_passed() -> None:
    with NatsServer(args=["--server_name", "named-by-test"]) as server:
        assert "named-by-test" in server.log_text()
