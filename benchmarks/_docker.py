"""Per-task overhead of the Docker backend against a bare ``docker run --rm IMAGE python3 -c pass``.

Run it against the engine the tests use::

    DOCKER_HOST=unix:///run/jobsub-docker.sock \\
        python -m benchmarks._docker --image jobsub-test-python:latest --parallelism 2

Three numbers, each the median of ``repetitions`` runs in the same process
and on the same image (network mode ``host``, as in the tests):

- ``floor_s``: ``containers.run(image, "python3 -c pass", remove=True)`` via the
  SDK: create, start, attach, wait, remove.  Nothing can be faster per task.
- ``single_s``: ``executor.submit(operator.add, 1, 2).result()``: pickling,
  folder, code package (cached), dispatcher request, container start, the
  worker's imports, result detection.  Goal: ``<= 1.2 * floor_s``.
- ``array_s``: ``map_array`` of ``array_tasks`` trivial tasks with
  ``array_parallelism`` until every result is in.  Goal:
  ``<= array_tasks / parallelism * floor_s * 1.2``.
- ``bare_parallel_s``: the same number of bare runs from ``parallelism``
  threads.  The engine does not start containers in parallel as fast as it
  starts one (on 2 cores, 20 bare runs take ~3.4 s from 2 threads, not the
  ~2.1 s that ``20 / 2 * floor`` assumes), so this, not the formula above,
  is what an array can approach.
- ``bare_parallel_worker_imports_s``: the same, each container importing
  what the worker needs (``jobsub.worker``, ``jobsub.job``: ~85 ms with
  cached ``.pyc``).  The gap between this and ``array_s`` is the backend's
  own cost; the gap between it and ``bare_parallel_s`` is the core's imports.

A warm-up submission first starts the dispatcher and fills the code cache, so
the figures are the steady state a user sees after the first job.
"""

from __future__ import annotations

import argparse
import json
import logging
import operator
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger("jobsub.benchmarks.docker")


def measure(
    image: str,
    *,
    repetitions: int = 5,
    array_tasks: int = 20,
    parallelism: int = 2,
    network_mode: str = "host",
    folder: str | None = None,
) -> dict[str, float]:
    """Measure the floor, one submit→result and one array; return seconds and ratios to the goals.

    Each repetition times a bare run and a jobsub run back to back, so that
    load from elsewhere on the machine weighs on both alike.

    Args:
        image: an image on the engine with python3 and cloudpickle.
        repetitions: runs per figure (the median is kept).
        array_tasks: tasks in the array measurement.
        parallelism: ``array_parallelism`` of the array (and threads of the bare parallel floor).
        network_mode: of every container (``host`` on machines without a bridge).
        folder: job folder root; a temporary directory by default.
    """
    import docker

    import jobsub
    from jobsub.packaging import build_code_package, ensure_unpacked

    client = docker.from_env(max_pool_size=max(10, parallelism))

    def bare(code: str = "pass", mounts: list[dict[str, Any]] | None = None) -> None:
        client.containers.run(image, ["python3", "-c", code], remove=True, network_mode=network_mode, mounts=mounts)

    def bare_parallel(code: str = "pass", mounts: list[dict[str, Any]] | None = None) -> None:
        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(lambda _: bare(code, mounts), range(array_tasks)))

    floors, singles, parallel_floors, worker_floors, arrays = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="jobsub-bench-") as tmp:
        # what every task container must import before it can run anything (core, not backend)
        code = str(ensure_unpacked(build_code_package(os.getcwd(), cache_dir=os.path.join(tmp, ".code"))))
        imports = f"import sys; sys.path.insert(0, {code!r}); import jobsub.worker, jobsub.job"
        code_mount = [{"Type": "bind", "Source": code, "Target": code, "ReadOnly": False}]
        ex = jobsub.AutoExecutor(folder=folder or tmp, cluster="docker")
        ex.update_parameters(docker_image=image, docker_network_mode=network_mode, array_parallelism=parallelism)
        submitted: list[Any] = []

        def single() -> None:
            submitted.append(ex.submit(operator.add, 1, 2))
            submitted[-1].result()

        def array() -> None:
            jobs = ex.map_array(operator.add, range(array_tasks), range(array_tasks))
            submitted.extend(jobs)
            for job in jobs:
                job.result()

        single()  # warm-up: dispatcher started, code packaged
        for _ in range(repetitions):
            floors.append(_timed(bare))
            singles.append(_timed(single))
        for _ in range(max(1, repetitions // 2)):
            parallel_floors.append(_timed(bare_parallel))
            worker_floors.append(_timed(lambda: bare_parallel(imports, code_mount)))
            arrays.append(_timed(array))
        # let the dispatcher finish its bookkeeping before the folders go away
        for job in submitted:
            while job.folder.read_exit(job.index) is None:
                time.sleep(0.05)
    client.close()
    floor, single_s = statistics.median(floors), statistics.median(singles)
    parallel_floor, array_s = statistics.median(parallel_floors), statistics.median(arrays)
    array_goal = array_tasks / parallelism * floor * 1.2
    return {
        "floor_s": round(floor, 3),
        "single_s": round(single_s, 3),
        "single_vs_floor": round(single_s / floor, 2),
        "array_tasks": array_tasks,
        "parallelism": parallelism,
        "array_s": round(array_s, 3),
        "array_goal_s": round(array_goal, 3),
        "array_vs_goal": round(array_s / array_goal, 2),
        "bare_parallel_s": round(parallel_floor, 3),
        "array_vs_bare_parallel": round(array_s / parallel_floor, 2),
        "bare_parallel_worker_imports_s": round(statistics.median(worker_floors), 3),
        "array_vs_bare_parallel_worker_imports": round(array_s / statistics.median(worker_floors), 2),
    }


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(repeat: int = 5, image: str | None = None) -> None:
    """Section of compare_submitit.py: print the figures for parallelism 2 and 4."""
    image = image or os.environ.get("JOBSUB_TEST_IMAGE", "jobsub-test-python:latest")
    print(f"docker backend (image {image}):")
    for parallelism in (2, 4):
        f = measure(image, repetitions=max(3, repeat), parallelism=parallelism)
        print(
            f"  single submit -> result  {f['single_s']:.3f} s   bare docker run {f['floor_s']:.3f} s   "
            f"ratio {f['single_vs_floor']:.2f} (goal <= 1.2)"
        )
        print(
            f"  {f['array_tasks']} tasks, parallelism {parallelism}: {f['array_s']:.2f} s   goal "
            f"{f['array_goal_s']:.2f} s (ratio {f['array_vs_goal']:.2f}, goal <= 1)   "
            f"bare runs at that parallelism {f['bare_parallel_s']:.2f} s "
            f"(jobsub/bare {f['array_vs_bare_parallel']:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="jobsub-test-python:latest")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--array-tasks", type=int, default=20)
    parser.add_argument("--parallelism", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--network-mode", default="host")
    args = parser.parse_args()
    for parallelism in args.parallelism:
        figures = measure(
            args.image, repetitions=args.repetitions, array_tasks=args.array_tasks,
            parallelism=parallelism, network_mode=args.network_mode,
        )
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
