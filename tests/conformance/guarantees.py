"""Guarantees every backend keeps, with real faults: a client killed mid-submission, secrets by name.

Inherited by every backend's class through ``BackendSuite``; the guarantees
that need a fault of this machine only (a full disk, a second user) stay in
tests/test_guarantees.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub.backends.base import Backend, load_backend_class
from jobsub.folder import find_submissions
from jobsub.storage import Storage, open_storage
from tests import tasks
from tests.conformance.fixtures import BackendFixtures, needs

ROOT = Path(__file__).resolve().parent.parent.parent

DYING_CLIENT = textwrap.dedent(
    """
    import os, signal, sys, jobsub
    from jobsub.backends.base import load_backend_class
    from tests import tasks
    backend = load_backend_class(sys.argv[2])
    submit = backend.submit
    def submit_then_die(self, *args, **kwargs):
        submit(self, *args, **kwargs)           # the backend has it ...
        os.kill(os.getpid(), signal.SIGKILL)    # ... and the client dies before recording the answer
    backend.submit = submit_then_die
    ex = jobsub.AutoExecutor(sys.argv[1], cluster=sys.argv[2])
    ex.update_parameters(**eval(sys.argv[3]))
    ex.submit(tasks.sleep_then, 1, "found again")
    """
)


def stored(storage: Storage, prefix: str) -> Iterator[tuple[str, bytes]]:
    """Every object under ``prefix`` (hidden names left out, as the store lists them)."""
    for key in storage.list(prefix):
        if storage.list(key):
            yield from stored(storage, key)
            continue
        try:
            yield key, storage.read_bytes(key)
        except (FileNotFoundError, IsADirectoryError):
            continue  # an empty directory of a local folder


class GuaranteesSuite(BackendFixtures):
    """Mixed into ``BackendSuite``."""

    # -- 5. a client killed while the backend accepts its submission: found again ------------------------
    @needs("survives_client")
    def test_submission_of_a_killed_client_is_found_again(
        self, service: None, folder_root: str, backend_parameters: dict[str, Any]
    ) -> None:
        out = subprocess.run(
            [sys.executable, "-c", DYING_CLIENT, folder_root, self.cluster, repr(backend_parameters)],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )
        assert out.returncode == -signal.SIGKILL, out.stderr
        (submission,) = find_submissions(open_storage(folder_root))
        meta = submission.read_meta()
        if load_backend_class(self.cluster).planned_id is Backend.planned_id:  # the scheduler names the job
            assert "intents" in meta and not meta["submissions"]  # the client never recorded its answer
        else:  # the backend names it (the folder's key): recorded before it was submitted
            assert meta["submissions"][0]["id"] == submission.key
        (job,) = jobsub.Job.attach(submission.url)  # ... yet the job is found, watched and read
        assert job.result(timeout=180) == "found again"
        listing = subprocess.run(
            [sys.executable, "-m", "jobsub.cli", "status", folder_root], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout
        assert job.job_id in listing and "COMPLETED" in listing

    # -- secrets by reference: pass_env ------------------------------------------------------------------
    # AWS Batch, GCP Batch and Kubernetes refuse pass_env by design: its values would show in
    # DescribeJobs / GetJob and the console, or in the pod spec to whoever may read pods
    # (Capabilities.env_shown)
    @pytest.mark.not_on("aws_batch", "gcp_batch", "kubernetes")
    def test_pass_env_reaches_the_task_and_never_the_folder(
        self, executor: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("JOBSUB_TEST_TOKEN", "s3cr3t-value")
        executor.update_parameters(pass_env=["JOBSUB_TEST_TOKEN"])
        job = executor.submit(tasks.getenv, "JOBSUB_TEST_TOKEN")
        assert job.result(timeout=120) == "s3cr3t-value"
        folder = job.folder
        written = [key for key, data in stored(folder.storage, folder.key) if b"s3cr3t-value" in data]
        assert written == [folder.result_key(0, 0)]  # only the value the task returned
