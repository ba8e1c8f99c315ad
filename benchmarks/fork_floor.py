"""The physical floor of an isolated, folder-based local backend, measured on this machine.

Usage: ``python benchmarks/fork_floor.py [--tasks 1000] [--parallel 2,3,4] [--repeat 3]``

What jobsub's local backend does for ``map_array(fn, xs)``, stripped to what
no such design can avoid, in one warm process with cloudpickle imported:

1. pickle the function once (``call.pkl``) and each task's arguments
   (``args/<i>.pkl``) into a fresh folder;
2. fork one child per task, ``parallel`` at a time; each child reads
   ``call.pkl`` and ``args/<i>.pkl``, runs the call, pickles the value into a
   temp file and renames it to ``result/<i>.pkl``, then ``os._exit(0)``;
3. read back and unpickle every result.

No server, no socket, no markers, no logs, no polling: whatever jobsub adds
on top of this is its own overhead.  ``fork only`` is step 2 alone;
``end to end`` is steps 1-3, the same work as ``map_array`` -> all results,
and is the figure ``local_scale.py`` compares jobsub with.  Prints figures;
nothing here is a test.  Standalone: it does not import jobsub.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time

import cloudpickle


def mul(a: int, b: int) -> int:
    """The task: defined in ``__main__`` when run as a script, so it is pickled by value, as users' are."""
    return a * b


def _child(folder: str, index: int) -> None:  # pragma: no cover - runs in the forked child
    code = 1
    try:
        with open(f"{folder}/call.pkl", "rb") as f:
            function = pickle.loads(f.read())
        with open(f"{folder}/args/{index}.pkl", "rb") as f:
            args = pickle.loads(f.read())
        data = pickle.dumps(function(*args), protocol=pickle.HIGHEST_PROTOCOL)
        tmp = f"{folder}/result/.{index}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
        os.rename(tmp, f"{folder}/result/{index}.pkl")
        code = 0
    finally:
        os._exit(code)


def write_inputs(folder: str, fn: object, n: int) -> None:
    os.makedirs(f"{folder}/args")
    os.makedirs(f"{folder}/result")
    with open(f"{folder}/call.pkl", "wb") as f:
        f.write(cloudpickle.dumps(fn))
    for i in range(n):
        with open(f"{folder}/args/{i}.pkl", "wb") as f:
            f.write(cloudpickle.dumps((i, i)))


def run_children(folder: str, n: int, parallel: int) -> None:
    running = 0
    for i in range(n):
        if running >= parallel:
            _, status = os.wait()
            running -= 1
            if status:
                raise RuntimeError(f"a child failed (status {status})")
        if os.fork() == 0:
            _child(folder, i)
        running += 1
    while running:
        _, status = os.wait()
        running -= 1
        if status:
            raise RuntimeError(f"a child failed (status {status})")


def read_results(folder: str, n: int) -> list[object]:
    out = []
    for i in range(n):
        with open(f"{folder}/result/{i}.pkl", "rb") as f:
            out.append(pickle.loads(f.read()))
    return out


def measure(n: int, parallel: int, base: str | None = None) -> tuple[float, float]:
    """Seconds for (end to end, fork only) of ``n`` tasks, ``parallel`` children at once."""
    folder = tempfile.mkdtemp(prefix="fork-floor-", dir=base)
    try:
        start = time.perf_counter()
        write_inputs(folder, mul, n)
        forked = time.perf_counter()
        run_children(folder, n, parallel)
        ran = time.perf_counter()
        values = read_results(folder, n)
        end = time.perf_counter()
        if values != [i * i for i in range(n)]:
            raise RuntimeError("wrong results")
        return end - start, ran - forked
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def floor(n: int, parallels: list[int], repeat: int, *, verbose: bool = True, base: str | None = None) -> float:
    """The best end-to-end tasks/s over ``parallels`` (median of ``repeat`` runs each)."""
    measure(min(n, 50), parallels[0], base)  # warm the page cache and the allocator
    best = 0.0
    for parallel in parallels:
        runs = [measure(n, parallel, base) for _ in range(repeat)]
        e2e = [n / r[0] for r in runs]
        fork = [n / r[1] for r in runs]
        best = max(best, statistics.median(e2e))
        if verbose:
            print(
                f"  fork floor, {n} tasks, {parallel} at once: end to end {statistics.median(e2e):6.0f} tasks/s "
                f"({min(e2e):.0f}-{max(e2e):.0f}), fork only {statistics.median(fork):6.0f} tasks/s "
                f"({min(fork):.0f}-{max(fork):.0f})"
            )
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--parallel", default="2,3,4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the folders go (default: the system's temp dir)")
    ns = parser.parse_args()
    print(f"fork floor on Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    best = floor(ns.tasks, [int(p) for p in ns.parallel.split(",")], ns.repeat, base=ns.dir)
    print(f"  floor (best end to end): {best:.0f} tasks/s")


if __name__ == "__main__":
    main()
