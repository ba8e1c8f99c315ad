"""The AWS Batch backend's costs, on moto's server and the local Docker engine.

Run it where the tests run (``eval "$(scripts/start-moto.sh)"`` after the
engine, and the image of scripts/build-cloud-test-image.sh)::

    python -m benchmarks.aws_batch --image "$JOBSUB_CLOUD_TEST_IMAGE" [--queue Q --bucket B]

Three parts, printed as one JSON object:

- ``map_array``: ``map_array`` of 10,000 trivial tasks on moto's tier without
  containers (``use_docker: false``; jobs "succeed" at submit): the AWS calls
  it makes (Batch and S3, counted at the HTTP level) and how fast the
  arguments reach S3 (tasks/s), then the calls of one poll of the finished
  array.
- ``poll``: calls per poll of a RUNNING 10,000-task array.  moto cannot keep
  one running (its container tier would start 10,000 containers, its other
  tier ends them at submit), so DescribeJobs/ListJobs are answered at the
  HTTP level (botocore's ``before-send``) from a model of such an array,
  with AWS's paging (1,000 children per ListJobs page).  Goal: <= 15.
- ``latency``: submit -> result of one trivial task, against a bare boto3
  SubmitJob + DescribeJobs loop (every 0.1 s, until SUCCEEDED) of ``python3
  -c pass`` in the same image, on the same moto and engine, alternated,
  medians of ``--repetitions``.  Goal: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import statistics
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any, cast

import jobsub
from jobsub.backends.aws_batch import AWSBatchBackend

logger = logging.getLogger("jobsub.benchmarks.aws_batch")


def _client(service: str) -> Any:
    import boto3

    return boto3.session.Session().client(service)


def setup(queue: str, bucket: str) -> None:
    """The queue, its compute environment and role, and the bucket, in moto (idempotent)."""
    iam, batch, s3 = _client("iam"), _client("batch"), _client("s3")
    try:
        role = iam.create_role(RoleName="jobsub-bench-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="jobsub-bench-batch")["Role"]["Arn"]
    if not batch.describe_job_queues(jobQueues=[queue])["jobQueues"]:
        environment = batch.create_compute_environment(
            computeEnvironmentName=f"{queue}-ce", type="UNMANAGED", state="ENABLED", serviceRole=role,
        )["computeEnvironmentArn"]
        batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                               computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}])
    if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=bucket)


def _moto_batch(use_docker: bool) -> None:
    body = json.dumps({"batch": {"use_docker": use_docker}}).encode()
    request = urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + "/moto-api/config", data=body, method="POST")
    urllib.request.urlopen(request, timeout=10).read()


def _counting(client: Any, counts: collections.Counter[str]) -> None:
    client.meta.events.register("before-send", lambda request, **kw: counts.update([kw["event_name"].rpartition(".")[2]]))


def map_array(queue: str, bucket: str, image: str, tasks: int) -> dict[str, Any]:
    root = f"s3://{bucket}/bench-{uuid.uuid4().hex[:8]}"
    backend = AWSBatchBackend(root)
    executor = jobsub.Executor(root, backend=backend, job_queue=queue, image=image)
    # warm-up: code package and job definition, as after a first job (job_id: auto_array would
    # otherwise hold the call back and submit it inside the counted window)
    _ = executor.submit(abs, -1).job_id
    batch_calls: collections.Counter[str] = collections.Counter()
    s3_calls: collections.Counter[str] = collections.Counter()
    _counting(backend.api.client("batch"), batch_calls)
    _counting(cast(Any, executor.storage).client, s3_calls)  # the process's S3 client (an S3Storage), which every folder shares
    _moto_batch(use_docker=False)
    try:
        start = time.perf_counter()
        jobs = executor.map_array(abs, range(-tasks, 0))
        elapsed = time.perf_counter() - start
    finally:
        _moto_batch(use_docker=True)
    submitted = dict(batch_calls), dict(s3_calls)
    states = backend.states([j.job_id for j in jobs])
    return {
        "tasks": tasks,
        "seconds": round(elapsed, 2),
        "tasks_per_s": round(tasks / elapsed),
        "batch_calls": submitted[0],
        "s3_calls": submitted[1],
        "poll_of_finished_array_calls": sum(batch_calls.values()) - sum(submitted[0].values()),
        "states": dict(collections.Counter(str(s.state) for s in states.values())),
    }


class _RunningArray:
    """AWS's answers about one 10,000-child array, at the HTTP level, with AWS's ListJobs paging."""

    def __init__(self, size: int) -> None:
        self.parent = str(uuid.uuid4())
        self.states = ["RUNNABLE"] * size

    def set(self, **counts: int) -> None:
        it = iter([s for s, n in counts.items() for _ in range(n)])
        self.states = [next(it, "RUNNABLE") for _ in self.states]

    def answer(self, request: Any, **kwargs: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        operation = kwargs["event_name"].rpartition(".")[2]
        body = json.loads(request.body or b"{}")
        if operation == "DescribeJobs":
            summary = collections.Counter(self.states)
            job = {"jobId": self.parent, "jobName": "bench", "status": "RUNNING", "jobQueue": "q",
                   "arrayProperties": {"size": len(self.states), "statusSummary": {
                       s: summary.get(s, 0) for s in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")}}}
            data: dict[str, Any] = {"jobs": [job] if self.parent in body["jobs"] else []}
        else:  # ListJobs of the array's children in one status, paged
            children = [i for i, s in enumerate(self.states) if s == body["jobStatus"]]
            start = int(body.get("nextToken") or 0)
            page = children[start : start + int(body.get("maxResults") or 100)]
            data = {"jobSummaryList": [
                {"jobId": f"{self.parent}:{i}", "status": body["jobStatus"], "arrayProperties": {"index": i},
                 "container": {"exitCode": 1} if body["jobStatus"] == "FAILED" else {}} for i in page]}
            if start + len(page) < len(children):
                data["nextToken"] = str(start + len(page))

        class Raw:
            def stream(self, **_: Any) -> Iterator[bytes]:
                yield json.dumps(data).encode()

        return AWSResponse(request.url, 200, {"Content-Type": "application/json"}, Raw())


def poll(size: int = 10_000) -> dict[str, Any]:
    backend = AWSBatchBackend(f"s3://bench-{uuid.uuid4().hex[:8]}")
    array = _RunningArray(size)
    backend.api.client("batch").meta.events.register("before-send.batch.*", array.answer)
    backend.tracker.submitted(array.parent, array=True, pending_limit_min=60.0)  # as the process that submitted it knows
    ids = [f"{array.parent}_{i}" for i in range(size)]
    scenarios = {  # in the order an array goes through them (a FAILED count never goes down)
        "waiting (all RUNNABLE)": {},
        "starting: 1,000 RUNNING, 9,000 RUNNABLE": {"RUNNING": 1000},
        "same counts, next poll": {"RUNNING": 1000},
        "all RUNNING (nothing to list)": {"RUNNING": 10_000},
        "mid-way: 2,000 RUNNING, 100 FAILED, 3,900 SUCCEEDED": {"RUNNING": 2000, "FAILED": 100, "SUCCEEDED": 3900},
        "worst: 4,999 RUNNING, 5,000 FAILED, 1 RUNNABLE": {"RUNNING": 4999, "FAILED": 5000},
        "ended: 5,000 FAILED, 5,000 SUCCEEDED": {"FAILED": 5000, "SUCCEEDED": 5000},
    }
    result: dict[str, Any] = {}
    for name, counts in scenarios.items():
        array.set(**counts)
        before = sum(backend.api.counts.values())
        states = backend.states(ids)
        result[name] = {
            "calls": sum(backend.api.counts.values()) - before,
            "states": dict(collections.Counter(str(s.state) for s in states.values())),
        }
    result["max_calls_per_poll"] = max(v["calls"] for v in result.values())
    return result


def latency(queue: str, bucket: str, image: str, repetitions: int) -> dict[str, Any]:
    """Medians of alternated runs: jobsub, a bare job, and a bare job that moves its data through S3."""
    batch = _client("batch")
    s3_io = (  # what a task reading its input from S3 and writing its output there does, at least
        "import boto3, os; c = boto3.client('s3'); "
        f"c.get_object(Bucket='{bucket}', Key='bare/in'); c.put_object(Bucket='{bucket}', Key='bare/out', Body=b'1')"
    )
    _client("s3").put_object(Bucket=bucket, Key="bare/in", Body=b"x")
    for name, command in (("jobsub-bench-bare", ["python3", "-c", "pass"]), ("jobsub-bench-bare-s3", ["python3", "-c", s3_io])):
        batch.register_job_definition(
            jobDefinitionName=name, type="container",
            containerProperties={"image": image, "command": command, "vcpus": 1, "memory": 512},
        )
    endpoint = [{"name": k, "value": os.environ[k]} for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION") if k in os.environ]
    root = f"s3://{bucket}/bench-{uuid.uuid4().hex[:8]}"
    executor = jobsub.AutoExecutor(folder=root, cluster="aws_batch", aws_batch_job_queue=queue, aws_batch_image=image)
    executor.submit(abs, -1).result(timeout=120)  # warm-up: definition registered, code uploaded

    def bare(definition: str) -> float:
        start = time.perf_counter()
        job_id = batch.submit_job(
            jobName="bare", jobQueue=queue, jobDefinition=definition, containerOverrides={"environment": endpoint},
        )["jobId"]
        while True:
            status = batch.describe_jobs(jobs=[job_id])["jobs"][0]["status"]
            if status in ("SUCCEEDED", "FAILED"):
                assert status == "SUCCEEDED", status
                return time.perf_counter() - start
            time.sleep(0.1)

    def ours() -> float:
        start = time.perf_counter()
        assert executor.submit(abs, -2).result(timeout=120) == 2
        return time.perf_counter() - start

    runs: dict[str, list[float]] = {"bare_boto3_s": [], "bare_boto3_s3_io_s": [], "jobsub_s": []}
    for _ in range(repetitions):
        runs["bare_boto3_s"].append(bare("jobsub-bench-bare"))
        runs["bare_boto3_s3_io_s"].append(bare("jobsub-bench-bare-s3"))
        runs["jobsub_s"].append(ours())
    medians = {name: round(statistics.median(values), 2) for name, values in runs.items()}
    return {
        **medians,
        "ratio": round(medians["jobsub_s"] / medians["bare_boto3_s"], 2),
        "ratio_to_s3_io": round(medians["jobsub_s"] / medians["bare_boto3_s3_io_s"], 2),
        "all_s": {name: [round(x, 2) for x in values] for name, values in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=os.environ.get("JOBSUB_CLOUD_TEST_IMAGE"), required=not os.environ.get("JOBSUB_CLOUD_TEST_IMAGE"))
    parser.add_argument("--queue", default="jobsub-bench-queue")
    parser.add_argument("--bucket", default="jobsub-bench")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--only", choices=["map_array", "poll", "latency"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    setup(args.queue, args.bucket)
    results: dict[str, Any] = {}
    if args.only in (None, "poll"):
        results["poll"] = poll()
    if args.only in (None, "map_array"):
        results["map_array"] = map_array(args.queue, args.bucket, args.image, args.tasks)
    if args.only in (None, "latency"):
        results["latency"] = latency(args.queue, args.bucket, args.image, args.repetitions)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
