"""Job folders in an ``s3://`` bucket on moto: how fast a big array is written, and what a poll costs.

Usage: ``python benchmarks/object_store.py [--tasks 10000] [--finished 10000]`` with moto running
(``eval "$(scripts/start-moto.sh)"``).  Prints figures and the requests counted; nothing here is a test.

Goals (issue "Job folders on object stores"): ``map_array`` of 10,000 trivial tasks writes its
call and arguments at 2,000 tasks/s or more on a 2-core machine, and one poll of that array once
all are finished costs 15 storage calls at most.  The submission goes to a backend that starts
nothing (``Idle`` below): what is timed is jobsub's writing to the store.  The finished results are
then written straight to the store (what 10,000 tasks would have written), and a poll is every
handle asking ``done()``.
"""

from __future__ import annotations

import argparse
import operator
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobsub
from jobsub.backends.base import Backend, Launch
from jobsub.calls import Outcome
from jobsub.folder import JobFolder
from jobsub.parameters import Resolved
from jobsub.states import JobState, Status
from jobsub.storage.s3 import S3Storage


class Idle(Backend):
    """Accepts submissions and starts nothing; every job it is asked about is still pending."""

    name = "idle"

    def submit(self, launch: Launch, n_tasks: int, params: Resolved, folder: JobFolder, *, array: bool) -> str:
        return folder.key

    def states(self, backend_ids: Any) -> dict[str, Status]:
        return {i: Status(JobState.PENDING) for i in backend_ids}

    def cancel(self, backend_ids: Any) -> None:
        pass


def count_requests(storage: S3Storage) -> list[str]:
    """Every request the store's client sends from now on (operation names), via botocore's events."""
    seen: list[str] = []
    storage.client.meta.events.register("before-send.s3", lambda request, **_: seen.append(request.method))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=None, help="results to write for the poll (default: all)")
    ns = parser.parse_args()
    import boto3

    bucket = f"jobsub-bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/runs"
    ex = jobsub.Executor(url, backend=Idle(url))
    storage = ex.storage
    assert isinstance(storage, S3Storage)
    seen = count_requests(storage)

    start = time.perf_counter()
    jobs = ex.map_array(operator.mul, range(ns.tasks), range(ns.tasks))
    elapsed = time.perf_counter() - start
    print(f"map_array({ns.tasks}) into {url}: {elapsed:.2f} s, {ns.tasks / elapsed:,.0f} tasks/s (goal >= 2,000)")
    print(f"  requests: {len(seen)} ({seen.count('PUT')} PUT, {seen.count('GET')} GET), "
          f"not {ns.tasks} argument objects")

    finished = ns.tasks if ns.finished is None else ns.finished
    folder = jobs[0].folder
    payload = Outcome(ok=True, value=0).dumps()

    def write(index: int) -> None:
        folder.write_result(index, 0, payload, ok=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(finished)))
    print(f"  ({finished} results written straight to the store in {time.perf_counter() - start:.0f} s)")

    seen.clear()
    start = time.perf_counter()
    done = sum(job.done() for job in jobs[:finished])
    poll: Any = time.perf_counter() - start
    print(f"one poll of {finished} finished tasks (every handle's done()): {len(seen)} requests, "
          f"{poll:.2f} s, {done} done (goal <= 15 requests)")


if __name__ == "__main__":
    main()
