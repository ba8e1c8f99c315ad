"""The GCP Batch backend's costs, on the suite's Batch fake (tests/fakes/gcp_batch.py) and fake-gcs-server.

Run it where the tests run (``eval "$(scripts/start-fake-gcs.sh)"``, the Docker engine and the
image of scripts/build-cloud-test-image.sh)::

    python -m benchmarks.gcp_batch [--tasks 10000] [--repetitions 3]

Printed as one JSON object:

- ``map_array``: ``map_array`` of N trivial tasks against a fake that does not run containers
  (its tasks reach RUNNING and stay there): the Batch calls it makes (goal: 1 CreateJob) and
  how long the submission takes (the arguments go to GCS).
- ``poll``: the Batch calls of one ``states()`` of all N ids of that RUNNING job, with every task
  running and with ``array_parallelism`` N/5 (running and waiting ones told apart: the RUNNING
  tasks are listed once, 1,000 a page).  Goal: <= 3 while nothing failed.
- ``latency``: submit -> result of one trivial task, against the bare client doing the same:
  CreateJob of ``python3 -c pass`` in the same image, then GetJob every 0.1 s until SUCCEEDED;
  same fake, same engine, alternated, medians of ``--repetitions``.  Goal: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from typing import Any

import jobsub
from jobsub.backends.gcp_batch import GCPBatchBackend
from jobsub.backends.gcp_batch.render import job_name
from tests import gcp_batch_env
from tests.fakes.gcp_batch import FakeBatch


def _executor(root: str, **extra: Any) -> tuple[GCPBatchBackend, jobsub.Executor]:
    """A backend of the benchmark's own (its calls are the benchmark's) and an executor on it."""
    backend = GCPBatchBackend(root)
    own = {k.removeprefix("gcp_batch_"): v for k, v in gcp_batch_env.parameters().items()}
    return backend, jobsub.Executor(root, backend=backend, auto_array=False, **own, **extra)


def _point_at(fake: FakeBatch) -> None:
    os.environ["JOBSUB_GCP_BATCH_ENDPOINT"] = os.environ["JOBSUB_GCP_LOGGING_ENDPOINT"] = fake.url


def map_array_and_poll(tasks: int) -> dict[str, Any]:
    fake = FakeBatch(execute=False)
    _point_at(fake)
    try:
        answer: dict[str, Any] = {"tasks": tasks}
        for label, parallelism in (("all_running", None), ("one_fifth_running", tasks // 5)):
            backend, ex = _executor(f"gs://{gcp_batch_env.BUCKET}/bench-{uuid.uuid4().hex[:8]}", array_parallelism=parallelism)
            fake.calls.clear()
            start = time.perf_counter()
            jobs = ex.map_array(int, range(tasks))
            submit_s = time.perf_counter() - start
            calls = dict(fake.calls)
            parent = jobs[0].job_id.rpartition("_")[0]
            want = parallelism or tasks
            while _running(fake, job_name(parent)) < want:
                time.sleep(0.2)
            fake.calls.clear()
            backend.states([job.job_id for job in jobs])
            answer[label] = {"submit_calls": calls, "submit_s": round(submit_s, 2), "poll_calls": dict(fake.calls)}
        return answer
    finally:
        fake.close()


def _running(fake: FakeBatch, name: str) -> int:
    job = fake.job(name)
    return int(job.status.task_groups["group0"].counts.get("RUNNING", 0)) if job is not None else 0


def latency(repetitions: int) -> dict[str, Any]:
    from google.cloud import batch_v1

    fake = FakeBatch()
    _point_at(fake)
    image = os.environ["JOBSUB_CLOUD_TEST_IMAGE"]
    os.environ["JOBSUB_POLL_INTERVAL"] = "0.1"
    backend, ex = _executor(f"gs://{gcp_batch_env.BUCKET}/bench-{uuid.uuid4().hex[:8]}")
    client = backend.api.client("batch")
    parent = f"projects/{gcp_batch_env.PROJECT}/locations/{gcp_batch_env.REGION}"
    ours, bare = [], []
    try:
        ex.submit(int, 0).result()  # the code package built and uploaded once, as in any session
        for _ in range(repetitions):
            start = time.perf_counter()
            ex.submit(int, 1).result()
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            job = batch_v1.Job(task_groups=[batch_v1.TaskGroup(task_count=1, task_spec=batch_v1.TaskSpec(
                runnables=[batch_v1.Runnable(container=batch_v1.Runnable.Container(
                    image_uri=image, entrypoint="python3", commands=["-c", "pass"]))]))])
            made = client.create_job(parent=parent, job=job, job_id=f"bare-{uuid.uuid4().hex[:12]}")
            while client.get_job(name=made.name).status.state != batch_v1.JobStatus.State.SUCCEEDED:
                time.sleep(0.1)
            bare.append(time.perf_counter() - start)
    finally:
        fake.close()
    return {
        "jobsub_s": round(statistics.median(ours), 3), "bare_client_s": round(statistics.median(bare), 3),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    problem = gcp_batch_env.problem()
    if problem:
        raise SystemExit(problem)
    print(json.dumps({"map_array": map_array_and_poll(args.tasks), "latency": latency(args.repetitions)}, indent=2))


if __name__ == "__main__":
    main()
