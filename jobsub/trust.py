"""Who wrote a record: keyed MACs over everything jobsub unpickles or trusts in a job folder.

::

    ~/.config/jobsub/key  (0600, 32 random bytes, made on first use: the user's key K)
        secret(folder key)  = HMAC-SHA256(K, folder key)            one per submission
        a record's MAC      = HMAC-SHA256(secret, its name + payload)

    client ── derives the secret from K ─────────────> seals call.pkl, args/, meta.json
           └─ Launch.env["JOBSUB_SECRETS"] ──────────> task (its environment, never the folder)
                                                          seals result/, checkpoint/, ...

Write access to a bucket (or a folder) is not enough to have a client run
code: a result, an input, or a record whose MAC does not match is refused
with ``CorruptResultError`` naming it, before anything is unpickled.  The
secret reaches a task through its backend's own channel (the task's
environment), so a backend needs nothing of its own for it.  A task is given
the secrets of its own submission and of the submissions whose results it
takes as arguments (``JOBSUB_SECRETS``: ``key=hex,key=hex``), and removes
the variable from its environment before the user's code runs.

Why one key per user, and submissions' secrets derived from it: any process
of the user (``Job(folder, id)``, the CLI, a held submission released by
another process, a restarted daemon) finds a submission's secret again from
the folder key alone, and nothing secret is ever written next to the job.
``JOBSUB_KEY_FILE`` names another key file (a key shared between the
machines one reattaches from).  docs/guarantees.md has the threat model.

HMAC-SHA256 rather than keyed BLAKE2b: with the SHA extensions of current
CPUs it runs at ~1.3 GB/s here against BLAKE2b's ~0.5 (a large result is
hashed on both sides), and a small record costs ~2 us either way.  Its
import (~3 ms, OpenSSL) is paid once by the local fork server, whose tasks
inherit it, and once per container start elsewhere.
"""

from __future__ import annotations

import hmac
import os

__all__ = [
    "MAC_SIZE", "SECRETS_VARIABLE", "key_file", "mac", "secret", "secrets_env", "take_secrets", "verify", "without_secrets",
]

SECRETS_VARIABLE = "JOBSUB_SECRETS"
MAC_SIZE = 32
_KEY_SIZE = 32

_user_key: bytes | None = None
_given: dict[str, bytes] = {}
"""In a task: the secrets its environment brought (``take_secrets``)."""


def key_file() -> str:
    """``$JOBSUB_KEY_FILE``, else ``$XDG_CONFIG_HOME/jobsub/key`` (``~/.config/jobsub/key``)."""
    explicit = os.environ.get("JOBSUB_KEY_FILE")
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "jobsub", "key")


def _user_key_bytes() -> bytes:
    """This user's key: read once a process, made (0600, in a 0700 folder) the first time."""
    global _user_key
    if _user_key is None:
        path = key_file()
        try:
            _user_key = _read_key(path)
        except FileNotFoundError:
            _user_key = _make_key(path)
    return _user_key


def _read_key(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(
                f"jobsub's key file {path} must belong to this user and be readable by no one else "
                f"(uid {st.st_uid}, mode {st.st_mode & 0o777:o}): `chmod 600 {path}`, or remove it to make a new key"
            )
        data = os.read(fd, 4 * _KEY_SIZE)
    finally:
        os.close(fd)
    if len(data) < _KEY_SIZE:
        raise PermissionError(f"jobsub's key file {path} is too short ({len(data)} bytes): remove it to make a new key")
    return data[:_KEY_SIZE]


def _make_key(path: str) -> bytes:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(_KEY_SIZE))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # create-only: two processes making the key at once keep the first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def secret(name: str) -> bytes:
    """The secret of submission ``name`` (its folder key; ``.cache`` for an executor root's cache).

    A task uses the one its environment brought; anyone else derives it from
    this user's key.
    """
    given = _given.get(name)
    if given is not None:
        return given
    return hmac.digest(_user_key_bytes(), b"jobsub submission secret\0" + name.encode(), "sha256")


def mac(key: bytes, name: str, payload: bytes) -> bytes:
    """The MAC of ``payload`` stored as ``name``: a record moved to another name no longer verifies."""
    h = hmac.new(key, b"jobsub record\0" + name.encode() + b"\0", "sha256")
    h.update(payload)  # not concatenated: a large result is not copied
    return h.digest()


def verify(key: bytes, name: str, payload: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(key, name, payload), tag)


def secrets_env(key: str, meta: dict[str, object] | None = None) -> dict[str, str]:
    """What a task of submission ``key`` needs: its secret and those of its upstreams (``meta["waits_for"]``)."""
    names = [key]
    waits_for = (meta or {}).get("waits_for") or {}
    for refs in waits_for.values() if isinstance(waits_for, dict) else ():
        for ref in refs:
            upstream = str(ref[0]).rstrip("/").rpartition("/")[2]
            if upstream not in names:
                names.append(upstream)
    return {SECRETS_VARIABLE: ",".join(f"{name}={secret(name).hex()}" for name in names)}


def without_secrets(env: dict[str, str]) -> dict[str, str]:
    """``env`` less the secrets: what may be written into a folder (a spec kept for a later adoption)."""
    return {name: value for name, value in env.items() if name != SECRETS_VARIABLE}


def take_secrets() -> None:
    """In a task: keep the secrets the environment brought, and take them out of it (the user's code
    and its subprocesses never see them)."""
    _given.clear()  # a reused process: only this task's
    text = os.environ.pop(SECRETS_VARIABLE, "")
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if sep:
            try:
                _given[name] = bytes.fromhex(value)
            except ValueError:
                continue
