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
import struct

from .errors import CorruptResultError

__all__ = [
    "MAC_SIZE", "SECRETS_VARIABLE", "key_file", "mac", "not_ours", "open_json", "seal", "seal_json", "secret",
    "secrets_env", "take_secrets", "unseal", "verify", "without_secrets",
]

SECRETS_VARIABLE = "JOBSUB_SECRETS"
MAC_SIZE = 32
_KEY_SIZE = 32
_MAGIC = b"JSR2"
_HEADER = struct.Struct(f">4sQ{MAC_SIZE}s")  # magic, payload length, MAC
_LEGACY_MAGIC = b"JSR1"
_LEGACY_HEADER = struct.Struct(">4sQI")  # magic, payload length, crc32: results before sealing
_JSON_HEAD = b'{"mac": "'
_JSON_TAG = 2 * MAC_SIZE

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


# -- the formats: a sealed pickle, a sealed JSON record ----------------------------------------------------
def not_ours(where: str, why: str) -> CorruptResultError:
    return CorruptResultError(
        f"{where} {why}, so jobsub does not read it: someone other than this user's jobsub wrote it "
        f"(or moved it there), or this machine lacks the key the submission was made with ({key_file()})",
        final=True,
    )


def seal(secret: bytes, name: str, payload: bytes) -> bytes:
    """``payload`` framed: magic, length, MAC (a truncated file is told from a forged one)."""
    return _HEADER.pack(_MAGIC, len(payload), mac(secret, name, payload)) + payload


def unseal(where: str, secret: bytes, name: str, data: bytes, *, legacy: bool) -> bytes:
    """The payload of a sealed file, verified; ``CorruptResultError`` naming ``where`` otherwise.

    ``legacy``: also take what jobsub wrote before it sealed files (a result
    framed with a CRC, an input pickle as it is): on a local disk only, where
    the owner check stands.  A short or damaged file is not ``final``: on a
    store without atomic writes it may still be arriving.
    """
    magic = data[:4]
    if magic == _MAGIC:
        if len(data) < _HEADER.size:
            raise CorruptResultError(f"{where}: {len(data)} bytes, too short")
        _, length, tag = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if length != len(payload):
            raise CorruptResultError(f"{where} is damaged (expected {length} bytes, found {len(payload)})")
        if not verify(secret, name, payload, tag):
            raise not_ours(where, "does not carry this submission's authentication code")
        return payload
    if not legacy:
        if len(data) < _HEADER.size:
            raise CorruptResultError(f"{where}: {len(data)} bytes, too short")
        raise not_ours(where, "is not sealed")
    if magic == _LEGACY_MAGIC and len(data) >= _LEGACY_HEADER.size:
        import zlib

        _, length, crc = _LEGACY_HEADER.unpack_from(data)
        payload = data[_LEGACY_HEADER.size :]
        if length == len(payload) and zlib.crc32(payload) == crc:
            return payload
        raise CorruptResultError(f"{where} is damaged (expected {length} bytes, found {len(payload)})")
    if "/result/" in name or not data:
        raise CorruptResultError(f"{where} is damaged ({len(data)} bytes, no result header)")
    return data  # an input pickle written before sealing


def seal_json(secret: bytes, name: str, body: bytes) -> bytes:
    """``body`` (a JSON object) with its MAC as a first field ``"mac"``: still JSON for people and tools.

    The MAC covers the record as the reader rebuilds it (``{`` + what follows the field).
    """
    rest = body.lstrip()[1:].lstrip()
    empty = rest.startswith(b"}")
    tag = mac(secret, name, b"{}" if empty else b"{" + rest).hex().encode()
    return _JSON_HEAD + tag + (b'"}' if empty else b'", ' + rest)


def open_json(where: str, secret: bytes, name: str, data: bytes, *, legacy: bool) -> object:
    """The record of a sealed JSON file, verified: ``CorruptResultError`` if not ours, ``ValueError`` if damaged."""
    import json

    if data.startswith(_JSON_HEAD):
        tag, rest = data[len(_JSON_HEAD) : len(_JSON_HEAD) + _JSON_TAG], data[len(_JSON_HEAD) + _JSON_TAG :]
        if rest == b'"}':
            body = b"{}"
        elif rest.startswith(b'", '):
            body = b"{" + rest[3:]
        else:
            raise ValueError("its authentication code is cut short")
        try:
            valid = verify(secret, name, body, bytes.fromhex(tag.decode()))
        except ValueError:
            valid = False
        if not valid:
            raise not_ours(where, "does not carry this submission's authentication code")
        return json.loads(body)
    if not legacy:
        json.loads(data)  # a damaged record says so; a well-formed one is refused as not ours
        raise not_ours(where, "is not sealed")
    return json.loads(data)  # a local disk (the owner check stands): written before records were sealed
