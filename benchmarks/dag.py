"""The DAG layer's costs: a 1,000-node fan-out/fan-in on the local backend, hashing, cache hits.

Usage: ``python benchmarks/dag.py [--width 1000] [--sleep 2] [--cached 10000]``.  Prints figures;
nothing here is a test.

Goals (issue "DAG and caching layer"):

- a fan-out/fan-in of ``width`` nodes on the local backend (one root, ``width`` tasks taking it,
  one sink taking them all; every task sleeps ``--sleep`` s) finishes within 1.5 x its critical
  path (3 sleeps) plus the local backend's own cost of running that many tasks: the same tasks
  submitted the same way without dependencies, less the one sleep they take when all run at once;
- hashing a typical call costs under 1 ms;
- a cache hit on 10,000 finished calls returns in under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobsub
from jobsub.backends.base import get_backend
from jobsub.cache import call_key
from jobsub.calls import DelayedSubmission
from jobsub.parameters import CommonParameters, NoParameters, Resolved
from tests import tasks


def noop(x: Any = None) -> Any:
    return x


def fan_out_fan_in(root: Path, width: int, sleep_s: float, separate: bool) -> float:
    ex = jobsub.AutoExecutor(root, cluster="local", array_parallelism=width)
    started = time.perf_counter()
    top = ex.submit(tasks.sleep_then, sleep_s, 1)
    if separate:  # one submission per node: the DAG layer's cost per job shows
        leaves = [ex.submit(tasks.sleep_then, sleep_s, top) for _ in range(width)]
    else:
        leaves = ex.map_array(tasks.sleep_then, [sleep_s] * width, [top] * width)
    sink = ex.submit(tasks.total, leaves, extra={})
    assert sink.result(timeout=3600) == width
    return time.perf_counter() - started


def backend_cost(root: Path, width: int, sleep_s: float, separate: bool) -> float:
    """The local backend's own cost for the same ``width + 2`` tasks without dependencies: their
    wall time when they all run at once, less the one sleep they then take."""
    ex = jobsub.AutoExecutor(root, cluster="local", array_parallelism=width + 2)
    started = time.perf_counter()
    if separate:
        jobs = [ex.submit(tasks.sleep_then, sleep_s, 1) for _ in range(width + 2)]
    else:
        jobs = ex.map_array(tasks.sleep_then, [sleep_s] * (width + 2), [1] * (width + 2))
    for job in jobs:
        job.result(timeout=3600)
    return time.perf_counter() - started - sleep_s


def hashing() -> float:
    config = {"lr": 0.01, "layers": [64, 64, 32], "name": "run-7", "seed": 3}
    call = DelayedSubmission(tasks.total, [float(i) for i in range(100)], extra=config)
    params = Resolved(CommonParameters(), NoParameters())
    backend = get_backend("debug", {"root": "/tmp"})
    timings = []
    for _ in range(2000):
        t = time.perf_counter()
        call_key(call, params, backend)
        timings.append(time.perf_counter() - t)
    return statistics.median(timings)


def cache_hits(root: Path, count: int) -> tuple[float, float, float]:
    ex = jobsub.AutoExecutor(root, cluster="local", cache=True)
    jobs = ex.map_array(noop, range(count))
    for job in jobs:
        job.result(timeout=3600)
    fresh = jobsub.AutoExecutor(root, cluster="local", cache=True)  # as a new process would
    t = time.perf_counter()
    hits = fresh.map_array(noop, range(count))
    array_s = time.perf_counter() - t
    assert all(h.job_id == j.job_id for h, j in zip(hits, jobs))
    t = time.perf_counter()
    for i in range(count):
        fresh.submit(noop, i)
    loop_s = time.perf_counter() - t
    t = time.perf_counter()
    values = [h.result() for h in hits]
    read_s = time.perf_counter() - t
    assert values == list(range(count))
    return array_s, loop_s, read_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--cached", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print(f"hashing a typical call: median {hashing() * 1e6:.0f} us (goal < 1000 us)")
        critical = 3 * args.sleep
        for separate in (False, True):
            shape = f"{args.width} separate submits" if separate else "a map_array"
            cost = backend_cost(base / f"plain-{separate}", args.width, args.sleep, separate)
            wall = fan_out_fan_in(base / f"dag-{separate}", args.width, args.sleep, separate)
            bound = 1.5 * critical + cost
            print(
                f"fan-out/fan-in, {args.width + 2} nodes ({shape}), {args.sleep:g} s a task: {wall:.2f} s; "
                f"the same tasks without dependencies cost the backend {cost:.2f} s over their sleep; "
                f"bound 1.5 x {critical:.1f} + {cost:.2f} = {bound:.2f} s -> {'within' if wall <= bound else 'OVER'}"
            )
        array_s, loop_s, read_s = cache_hits(base / "cache", args.cached)
        print(f"cache: {args.cached} hits as one map_array {array_s:.2f} s (goal < 1 s); "
              f"as {args.cached} submit calls {loop_s:.2f} s; reading their {args.cached} results {read_s:.2f} s")


if __name__ == "__main__":
    main()
