"""The call cache across processes, on every backend: a killed notebook's job is found again.

Inherited by every backend's class through ``BackendSuite``; the keys
themselves are tested once, in tests/test_cache.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jobsub
from jobsub.storage import open_storage
from tests import tasks
from tests.conformance.fixtures import BackendFixtures, needs

ROOT = Path(__file__).resolve().parent.parent.parent

SUBMIT = textwrap.dedent(
    """
    import sys, time, jobsub
    from tests import tasks
    ex = jobsub.AutoExecutor(folder=sys.argv[1], cluster=sys.argv[2], cache=True)
    ex.update_parameters(**eval(sys.argv[3]))
    job = ex.submit(tasks.sleep_then, float(sys.argv[4]), "computed once")
    print(job.folder.key, job.job_id, flush=True)
    time.sleep(600)
    """
)


def submit_in_a_process(
    folder: str, backend: str, parameters: dict[str, Any], seconds: float
) -> tuple[subprocess.Popen[str], str, str]:
    """Another process submits ``sleep_then(seconds)`` with the cache on: (it, folder key, job id)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBMIT, folder, backend, repr(parameters), str(seconds)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert proc.stdout is not None
    key, job_id = proc.stdout.readline().split()
    return proc, key, job_id


class CacheSuite(BackendFixtures):
    """Mixed into ``BackendSuite``."""

    @needs("survives_client")  # debug jobs live and die with their process
    def test_reattached_after_the_submitting_process_is_killed(
        self, service: None, folder_root: str, backend_parameters: dict[str, Any]
    ) -> None:
        """A notebook killed mid-run: the next process's identical submit finds the running job."""
        proc, _key, job_id = submit_in_a_process(folder_root, self.cluster, backend_parameters, 8)
        job: jobsub.Job[Any] = jobsub.Job(folder_root, job_id)
        deadline = time.monotonic() + 180
        while job.state != "RUNNING":
            assert time.monotonic() < deadline, f"never started: {job.state}"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        ex = jobsub.AutoExecutor(folder_root, cluster=self.cluster, cache=True, **backend_parameters)
        again = ex.submit(tasks.sleep_then, 8.0, "computed once")
        assert again.job_id == job_id and again.state == "RUNNING"
        assert again.result(timeout=240) == "computed once"
        assert ex.submit(tasks.sleep_then, 8.0, "computed once").job_id == job_id
        assert len(open_storage(folder_root).list("")) == 1  # one submission
