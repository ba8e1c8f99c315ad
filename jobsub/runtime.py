"""Where this user's jobsub keeps its per-machine state, named in one place.

::

    $JOBSUB_LOCAL_DIR or /tmp/jobsub-$UID/         mode 0700, this user's only
        local-<digest>.sock  .pid  .log  .lock     the local fork server
        docker-<digest>.sock .pid  .log  .lock     the Docker dispatcher
        state/<backend>-<digest>.json (+ .lock)    shared state caches (jobsub.statecache)
        locks/<digest>.lock                        who supervises a submission

A daemon's digest covers the Python executable, where jobsub is and the
newest modification of its code, plus what the daemon serves (an engine's
address): a changed jobsub gets a fresh daemon rather than talking to one
that runs older code.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

__all__ = ["code_version", "daemon_socket", "digest", "runtime_dir"]

_PACKAGE = Path(__file__).resolve().parent


def runtime_dir(*parts: str) -> Path:
    """``$JOBSUB_LOCAL_DIR`` (default ``/tmp/jobsub-$UID``) or a folder under it, created 0700."""
    base = Path(os.environ.get("JOBSUB_LOCAL_DIR") or f"/tmp/jobsub-{os.getuid()}")
    path = base.joinpath(*parts)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@functools.cache
def code_version() -> str:
    """Where jobsub's code is and when it last changed (part of every daemon's digest)."""
    newest = max(p.stat().st_mtime_ns for p in _PACKAGE.rglob("*.py"))
    return f"{_PACKAGE}|{newest}"


def digest(*parts: str) -> str:
    """A short stable name for ``parts``."""
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def daemon_socket(kind: str, *serves: str) -> str:
    """The Unix socket of this user's ``kind`` daemon for this Python and jobsub (and ``serves``)."""
    return str(runtime_dir() / f"{kind}-{digest(sys.executable, code_version(), *serves)}.sock")
