"""Detached helper daemons (the local fork server, the Docker dispatcher) and their protocol.

Both are started on first use, outlive the process that started them (double
fork into their own session), and speak one JSON object per line over a Unix
socket: a request, then its reply.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import BackendError

__all__ = ["JsonLineServer", "daemon_log_handler", "request", "spawn_detached"]

logger = logging.getLogger("jobsub.daemon")

LOG_MAX_BYTES = 4 * 2**20
"""A daemon's log is rotated at this size, two old ones kept: it runs for days, unattended."""
LOG_BACKUPS = 2
REPEAT_WINDOW_S = 60.0
"""The same message (same text and values) is written at most once in this time; the next one
written says how many were held back (a store that cannot be reached is looked at 4 times a second)."""


def spawn_detached(module: str, args: Sequence[str], log_path: str) -> None:
    """Run ``python -m module args`` detached (double fork, own session), output to ``log_path``."""
    argv = [sys.executable, "-m", module, *args]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the intermediate child
            try:
                os.setsid()
                if os.fork() == 0:
                    os.chdir("/")
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(log_fd, 1)
                    os.dup2(log_fd, 2)
                    os.closerange(3, 65536)
                    os.execv(sys.executable, argv)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    finally:
        os.close(log_fd)


def request(
    sock_path: str, req: dict[str, Any], start: Callable[[], None], *, what: str, timeout: float = 120
) -> dict[str, Any]:
    """Send one request to the daemon at ``sock_path``, starting one if none answers.

    Every request is safe to repeat (adopting a held submission, cancelling a
    cancelled task, asking states), so a connection that breaks before the
    reply (a daemon that was exiting for idleness) is tried once more, against
    a fresh daemon if need be.
    """
    try:
        return _exchange(_connect(sock_path, start, what), req, timeout)
    except (ConnectionError, _ClosedEarly) as exc:
        logger.info("the %s dropped a request (%s); trying once more", what, exc)
    try:
        return _exchange(_connect(sock_path, start, what), req, timeout)
    except (ConnectionError, _ClosedEarly) as exc:
        raise BackendError(f"the {what} closed the connection ({exc}); see {sock_path}.log") from exc


class _ClosedEarly(Exception):
    pass


def _connect(sock_path: str, start: Callable[[], None], what: str) -> socket.socket:
    """A connection to the daemon; start one (again each second: an old one may still be leaving)."""
    deadline = time.monotonic() + 20
    next_start = 0.0
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(sock_path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
        now = time.monotonic()
        if now >= next_start:
            start()
            next_start = now + 1.0
        if now > deadline:
            raise BackendError(f"the {what} did not start; see {sock_path}.log")
        time.sleep(0.005)


def _exchange(conn: socket.socket, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    with conn:
        conn.settimeout(timeout)
        conn.sendall(json.dumps(req).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                raise _ClosedEarly("no reply")
            reply += chunk
    answer: dict[str, Any] = json.loads(reply)
    return answer


class JsonLineServer:
    """The connection handling both daemons share; subclasses implement ``handle``."""

    listener: socket.socket
    wake_r: int
    """Read end of the pipe that wakes the loop (signal.set_wakeup_fd, engine events...)."""
    wake_w: int

    def __init__(self) -> None:
        self.conns: dict[socket.socket, bytes] = {}
        self.watched: dict[int, Callable[[], None]] = {}
        """Other descriptors to wait on, and what to call when one is readable (the local
        server's reused children report on theirs).  select() takes descriptors below 1024."""
        self.last_activity = time.monotonic()

    def listen(self, sock_path: str) -> None:
        """Serve on ``sock_path`` (this user only), with a wake-up pipe for the loop."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        os.chmod(sock_path, 0o600)
        self.listener.listen(64)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    def wake(self) -> None:
        """Make the loop's current wait return (from another thread or a signal handler)."""
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"x")

    def serve_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; accept, answer requests; True if the wake pipe fired."""
        readers: list[Any] = [self.listener, self.wake_r, *self.conns, *self.watched]
        try:
            ready, _, _ = select.select(readers, [], [], timeout)
        except InterruptedError:
            ready = []
        woke = False
        for r in ready:
            if r is self.listener:
                self.accept(self.listener)
            elif r == self.wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                woke = True
            elif isinstance(r, int):
                callback = self.watched.get(r)
                if callback is not None:  # an earlier callback of this round may have dropped it
                    callback()
            else:
                self.read(r)
        return woke

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def drain(self) -> bool:
        """Answer what is queued on the socket already; False once nothing is (leaving)."""
        ready, _, _ = select.select([self.listener, *self.conns], [], [], 0.05)
        for r in ready:
            if r is self.listener:
                self.accept(self.listener)
            else:
                self.read(r)
        return bool(ready) or bool(self.conns)

    def accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        self.conns[conn] = b""

    def read(self, conn: socket.socket) -> None:
        """Read what ``conn`` sent; answer every complete line."""
        try:
            data = conn.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self.conns.pop(conn, None)
            conn.close()
            return
        *lines, rest = (self.conns[conn] + data).split(b"\n")
        self.conns[conn] = rest
        for line in lines:
            self.last_activity = time.monotonic()
            try:
                reply = self.handle(json.loads(line))
            except Exception as exc:  # report, don't die: the daemon serves everyone
                logger.exception("request failed")
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")


def run_daemon(sock_path: str, serve: Callable[[], None]) -> None:
    """The life of a daemon: one per socket (a lock), a log and a pid file next to it.

    The lock's file descriptor is closed in every task a daemon forks (they
    close every descriptor above 2), so a process a task leaves behind cannot
    keep the next daemon from starting.
    """
    import fcntl
    import signal

    single = open(sock_path + ".lock", "w")  # noqa: SIM115 - held for the daemon's life
    try:
        fcntl.flock(single, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another daemon already serves this socket
    logging.root.addHandler(daemon_log_handler(sock_path + ".log"))
    logging.root.setLevel(logging.INFO)
    with open(sock_path + ".pid", "w") as f:
        f.write(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve()
    finally:
        for leftover in (sock_path, sock_path + ".pid"):  # the log stays, for post-mortems
            with contextlib.suppress(OSError):
                os.unlink(leftover)


def daemon_log_handler(path: str, max_bytes: int = LOG_MAX_BYTES, repeat_window_s: float = REPEAT_WINDOW_S) -> logging.Handler:
    """A daemon's log: rotated at ``max_bytes`` (``LOG_BACKUPS`` kept), repeats held back (``_Repeats``)."""
    from logging.handlers import RotatingFileHandler

    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=LOG_BACKUPS)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    handler.addFilter(_Repeats(repeat_window_s))
    return handler


class _Repeats(logging.Filter):
    """Let each message (its text and values) through once per window; count what is held back."""

    def __init__(self, window_s: float) -> None:
        super().__init__()
        self.window_s = window_s
        self.seen: dict[tuple[str, int, str, str], list[float]] = {}  # key -> [when let through, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg), repr(record.args))
        now = time.monotonic()
        entry = self.seen.get(key)
        if entry is not None and now - entry[0] < self.window_s:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.msg = f"{record.msg} (and {entry[1]:.0f} times more in the {now - entry[0]:.0f} s before)"
        self.seen[key] = [now, 0]
        if len(self.seen) > 10_000:  # messages that stopped: forgotten once their window passed
            self.seen = {k: v for k, v in self.seen.items() if now - v[0] < self.window_s}
        return True
