"""Nothing is unpickled or believed that someone else could have written (``jobsub.trust``).

Real stores and processes: moto's S3 (scripts/start-moto.sh) for bucket folders,
the local backend's fork server, the worker as a subprocess, a second Unix user
(``useradd``) for a shared root.  The attacker is played by the test: it writes
into the bucket or the folder what anyone with write access there could.
"""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub import trust
from jobsub.cache import call_key
from jobsub.calls import DelayedSubmission, Outcome
from jobsub.folder import JobFolder, claim_cache_entry, lookup_id
from jobsub.storage import open_storage
from tests import tasks
from tests.test_guarantees import intruder  # noqa: F401 - the module's fixture
from tests.test_storage_s3 import bucket as s3_bucket  # noqa: F401 - session fixtures of the store tests
from tests.test_storage_s3 import moto  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


class _Payload:
    """What an attacker's pickle runs when it is loaded: here, it only leaves a mark."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.mark), "w"))


def _old_frame(payload: bytes) -> bytes:
    """The framing every result had before sealing (magic, length, CRC32): anyone could write it."""
    return struct.pack(">4sQI", b"JSR1", len(payload), zlib.crc32(payload)) + payload


def _bucket_executor(bucket: str) -> jobsub.AutoExecutor:
    return jobsub.AutoExecutor(f"s3://{bucket}/{uuid.uuid4().hex[:8]}/runs", cluster="local")


# -- 1. results, inputs and records in a bucket ------------------------------------------------------------------
def test_a_forged_result_in_a_bucket_is_refused_before_unpickling(s3_bucket: str, tmp_path: Path) -> None:  # noqa: F811
    """Write access to the bucket: a result planted before the task's own (which it then beats) is
    refused, naming the file, and its pickle never runs; in either old or new framing."""
    ex = _bucket_executor(s3_bucket)
    for frame in (_old_frame, lambda p: b"JSR2" + struct.pack(">Q", len(p)) + os.urandom(32) + p):
        mark = tmp_path / f"ran-{uuid.uuid4().hex[:6]}"
        job = ex.submit(tasks.sleep_then, 3, "real")
        job.folder.storage.write_bytes(job.folder.result_key(0, 0), frame(pickle.dumps(_Payload(mark))))
        with pytest.raises(jobsub.JobsubError, match=r"result/0\.0\.pkl") as info:
            job.result(timeout=60)
        assert "does not carry" in str(info.value) or "not sealed" in str(info.value)
        assert not mark.exists()
        job.cancel()


def test_forged_inputs_never_run_in_the_task(s3_bucket: str, tmp_path: Path) -> None:  # noqa: F811
    """A call.pkl replaced in the bucket before the task starts: the task refuses it (and so never
    holds the submission's secret while running someone else's code)."""
    storage = open_storage(f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs")
    folder = JobFolder.create(storage)
    folder.write_call(pickle.dumps({"function": tasks.add, "shard": 1}))
    folder.write_args([pickle.dumps(((1, 2), {}))])
    mark = tmp_path / "ran"
    folder.storage.write_bytes(folder._k("call.pkl"), pickle.dumps(_Payload(mark)))  # the attacker's
    env = {**os.environ, **trust.secrets_env(folder.key), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "jobsub.worker", folder.url], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1, out.stderr
    assert not mark.exists()
    payload = folder.read_result(0, 0)
    assert payload is not None
    outcome = Outcome.loads(payload)
    assert not outcome.ok and "call.pkl is not sealed" in outcome.message, outcome


def test_forged_records_in_a_bucket_are_refused(s3_bucket: str) -> None:  # noqa: F811
    """meta.json (what a held submission runs, with which setup) and exit records written by someone
    else: the first is an error naming it, the second reads as a damaged record, never as the end."""
    ex = _bucket_executor(s3_bucket)
    job = ex.submit(tasks.add, 1, 2)
    assert job.result(timeout=60) == 3
    storage = job.folder.storage
    record = b'{"state": "COMPLETED", "reason": "", "codes": [0], "end": 1}'
    storage.write_bytes(job.folder._k("exit", "0.json"), record)
    assert "damaged" in (job.folder.read_exit(0) or {}).get("reason", "")
    storage.write_bytes(job.folder._k("meta.json"), b'{"backend": "local", "backend_config": {}, "count": 1}')
    with pytest.raises(jobsub.CorruptResultError, match="meta.json.*not sealed"):
        jobsub.Job(ex.folder, job.job_id)
    root = ex.storage
    root.write_bytes(".ids/4242", job.folder.key.encode())  # a scheduler's id pointed at another submission
    with pytest.raises(jobsub.CorruptResultError, match=r"\.ids/4242"):
        lookup_id(root, "4242")


def test_another_machine_without_the_key_says_so(s3_bucket: str, tmp_path: Path) -> None:  # noqa: F811
    """Reattaching where the submitting key is missing: an error naming the key file, not a hang."""
    ex = _bucket_executor(s3_bucket)
    job = ex.submit(tasks.add, 2, 3)
    assert job.result(timeout=60) == 5
    script = "import sys, jobsub; print(jobsub.Job(sys.argv[1], sys.argv[2]).result())"
    out = subprocess.run(
        [sys.executable, "-c", script, str(ex.folder), job.job_id], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "JOBSUB_KEY_FILE": str(tmp_path / "other-key")}, timeout=60,
    )
    assert out.returncode != 0 and "other-key" in out.stderr and "Traceback" in out.stderr
    assert (tmp_path / "other-key").stat().st_mode & 0o777 == 0o600
    same = subprocess.run(
        [sys.executable, "-c", script, str(ex.folder), job.job_id], capture_output=True, text=True, cwd=ROOT,
        timeout=60,
    )
    assert same.stdout.strip() == "5", same.stderr  # another process of the same user: its key


# -- 12. a sealed pickle that is not a result record --------------------------------------------------------------
def test_a_result_that_is_not_a_record_is_a_corrupt_result_error(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local")
    job = ex.submit(tasks.sleep_then, 2, "real")
    job.folder.write_result(0, 0, pickle.dumps({"not": "an outcome"}), ok=True)
    with pytest.raises(jobsub.CorruptResultError, match=r"result/0\.0\.pkl holds a dict, not a jobsub result record"):
        job.result(timeout=30)


# -- 2. cache entries stay inside their root -----------------------------------------------------------------------
def test_cache_entries_are_followed_only_inside_their_root(s3_bucket: str) -> None:  # noqa: F811
    """An entry pointing at another root (even one of this user's) is a miss; one rewritten by
    someone else (in the bucket) is refused, naming it."""
    other = _bucket_executor(s3_bucket).submit(tasks.add, 100, 100)
    assert other.result(timeout=60) == 200
    ex = jobsub.AutoExecutor(f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}/runs", cluster="local", cache=True)
    first = ex.submit(tasks.add, 1, 1)
    assert first.result(timeout=60) == 2
    key = call_key(DelayedSubmission(tasks.add, 2, 2), ex._resolve(), ex.backend).key
    assert claim_cache_entry(ex.storage, key, 0, {"folder": other.folder.url, "index": 0})
    assert ex.submit(tasks.add, 2, 2).result(timeout=60) == 4  # not the other root's 200
    forged = call_key(DelayedSubmission(tasks.add, 3, 3), ex._resolve(), ex.backend).key
    ex.storage.write_bytes(f".cache/{forged}.0.json", b'{"folder": "%s", "index": 0}' % first.folder.url.encode())
    with pytest.raises(jobsub.CorruptResultError, match=rf"\.cache/{forged}\.0\.json"):
        ex.submit(tasks.add, 3, 3)


# -- 3. a root that others may write into --------------------------------------------------------------------------
def test_a_cache_folder_another_user_made_in_a_sticky_root_is_refused(intruder: str) -> None:  # noqa: F811
    """In a sticky world-writable root, another user makes .cache/ first (to swap entries later):
    the owner's cached calls refuse it, naming it, instead of trusting what is in it."""
    base = Path(tempfile.mkdtemp(prefix="jobsub-sticky-"))
    try:
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        make = f"mkdir {shlex.quote(str(shared / '.cache'))} && chmod 777 {shlex.quote(str(shared / '.cache'))}"
        subprocess.run(["su", intruder, "-s", "/bin/sh", "-c", make], check=True)
        ex = jobsub.AutoExecutor(shared, cluster="local", cache=True)
        with pytest.raises((PermissionError, jobsub.JobsubError), match=r"\.cache belongs to uid"):
            ex.submit(tasks.add, 1, 1).result(timeout=60)
    finally:
        shutil.rmtree(base, ignore_errors=True)
