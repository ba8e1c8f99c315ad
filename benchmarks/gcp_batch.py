"""The GCP Batch backend's costs, on the suite's Batch fake (tests/fakes/gcp_batch.py) and fake-gcs-server.

Run it where the tests run (``eval "$(scripts/start-fake-gcs.sh)"``, the Docker engine and the
image of scripts/build-cloud-test-image.sh)::

    python -m benchmarks.gcp_batch [--tasks 10000] [--array 100] [--repetitions 3] [--skip-map-array] [--skip-latency]

Printed as one JSON object, with the machine's load average (``os.getloadavg``) at the start
of each part:

- ``map_array``: ``map_array`` of N trivial tasks against a fake that does not run containers
  (its tasks reach RUNNING and stay there): the Batch calls it makes (goal: 1 CreateJob) and
  how long the submission takes (the arguments go to GCS, about 1 MB an object).
- ``poll``: the Batch calls of one ``states()`` of all N ids of that RUNNING job, with as many
  tasks running as Batch allows (``parallelism`` 5,000 at most: with N > 5,000 the others wait)
  and with ``array_parallelism`` N/5 (running and waiting tasks told apart: the RUNNING ones
  are listed, 1,000 a page).  Goal: <= 3 while nothing failed.
- ``latency``: submit -> result with jobsub's defaults (its polling intervals untouched), of
  one task (``submit``) and of an array (``map_array`` of ``--array`` tasks, every result),
  against the bare client sending the very CreateJob request jobsub sends: another executor's
  submission of the same call, its CreateJob recorded instead of sent, then sent by the bare
  ``BatchServiceClient`` and GetJob every 0.1 s until SUCCEEDED (its containers run the same
  worker on that submission's folder).  The bare run's time starts at its CreateJob: jobsub's
  pickling and folder writes are jobsub's cost.  Same fake, same engine, same image, both
  executors' code package uploaded before timing; jobsub and bare alternated, medians of
  ``--repetitions``.  Goal: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from typing import Any
from unittest import mock

import jobsub
from jobsub.backends.gcp_batch import GCPBatchBackend
from jobsub.backends.gcp_batch.render import MAX_PARALLELISM, job_name
from tests import gcp_batch_env
from tests.fakes.gcp_batch import FakeBatch


def _executor(root: str, **extra: Any) -> tuple[GCPBatchBackend, jobsub.Executor]:
    """A backend of the benchmark's own (its calls are the benchmark's) and an executor on it."""
    backend = GCPBatchBackend(root)
    own = {k.removeprefix("gcp_batch_"): v for k, v in gcp_batch_env.parameters().items()}
    return backend, jobsub.Executor(root, backend=backend, auto_array=False, **own, **extra)


def _root() -> str:
    return f"gs://{gcp_batch_env.BUCKET}/bench-{uuid.uuid4().hex[:8]}"


def _point_at(fake: FakeBatch) -> None:
    os.environ["JOBSUB_GCP_BATCH_ENDPOINT"] = os.environ["JOBSUB_GCP_LOGGING_ENDPOINT"] = fake.url


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def map_array_and_poll(tasks: int) -> dict[str, Any]:
    fake = FakeBatch(execute=False)
    _point_at(fake)
    try:
        answer: dict[str, Any] = {"tasks": tasks, "load": _load()}
        for label, parallelism in (("most_running", None), ("one_fifth_running", tasks // 5)):
            backend, ex = _executor(_root(), array_parallelism=parallelism)
            ex.submit(int, 0)  # the code package built and uploaded once, as in any session
            fake.calls.clear()
            start = time.perf_counter()
            jobs = ex.map_array(int, range(tasks))
            submit_s = time.perf_counter() - start
            calls = dict(fake.calls)
            parent = jobs[0].job_id.rpartition("_")[0]
            want = min(parallelism or tasks, MAX_PARALLELISM)
            while _running(fake, job_name(parent)) < want:
                time.sleep(0.2)
            fake.calls.clear()
            start = time.perf_counter()
            backend.states([job.job_id for job in jobs])
            answer[label] = {
                "running": want, "submit_calls": calls, "submit_s": round(submit_s, 2),
                "poll_calls": dict(fake.calls), "poll_s": round(time.perf_counter() - start, 2),
            }
        return answer
    finally:
        fake.close()


def _running(fake: FakeBatch, name: str) -> int:
    job = fake.job(name)
    return int(job.status.task_groups["group0"].counts.get("RUNNING", 0)) if job is not None else 0


def _submit(ex: jobsub.Executor, size: int) -> list[jobsub.Job[int]]:
    return ex.map_array(int, range(size)) if size > 1 else [ex.submit(int, 1)]


def _jobsub_run(ex: jobsub.Executor, size: int) -> float:
    """Seconds from jobsub's submit to every result in hand."""
    start = time.perf_counter()
    for job in _submit(ex, size):
        job.result()
    return time.perf_counter() - start


def _bare_run(backend: GCPBatchBackend, ex: jobsub.Executor, size: int) -> float:
    """Seconds from the bare client's CreateJob (of the request jobsub made for the same call) to SUCCEEDED."""
    from google.cloud import batch_v1

    recorded: list[batch_v1.CreateJobRequest] = []
    send = backend.api.batch

    def record(operation: str, **kwargs: Any) -> Any:
        if operation != "CreateJob":
            return send(operation, **kwargs)
        recorded.append(kwargs["request"])
        return None

    with mock.patch.object(backend.api, "batch", record):
        _submit(ex, size)
    client = backend.api.client("batch")
    start = time.perf_counter()
    made = client.create_job(request=recorded[0])
    while client.get_job(name=made.name).status.state != batch_v1.JobStatus.State.SUCCEEDED:
        time.sleep(0.1)
    return time.perf_counter() - start


def latency(repetitions: int, array: int) -> dict[str, Any]:
    fake = FakeBatch()
    _point_at(fake)
    root = _root()
    (_, ours), (bare_backend, bare) = _executor(root), _executor(root)
    answer: dict[str, Any] = {}
    try:
        for ex in (ours, bare):
            ex.submit(int, 0).result()  # the code package built and uploaded once, as in any session
        for size in (1, array):
            load = _load()
            jobsub_s, bare_s = [], []
            for _ in range(repetitions):
                jobsub_s.append(_jobsub_run(ours, size))
                bare_s.append(_bare_run(bare_backend, bare, size))
            answer[f"{size}_task" if size == 1 else f"{size}_tasks"] = {
                "load": load, "jobsub_s": round(statistics.median(jobsub_s), 3),
                "bare_client_s": round(statistics.median(bare_s), 3),
                "ratio": round(statistics.median(jobsub_s) / statistics.median(bare_s), 3),
                "runs": {"jobsub": [round(s, 2) for s in jobsub_s], "bare": [round(s, 2) for s in bare_s]},
            }
    finally:
        fake.close()
    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--array", type=int, default=100)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-map-array", action="store_true")
    args = parser.parse_args()
    problem = gcp_batch_env.problem()
    if problem:
        raise SystemExit(problem)
    answer: dict[str, Any] = {}
    if not args.skip_map_array:
        answer["map_array"] = map_array_and_poll(args.tasks)
    if not args.skip_latency:
        answer["latency"] = latency(args.repetitions, args.array)
    print(json.dumps(answer, indent=2))


if __name__ == "__main__":
    main()
