"""The local backend at scale, against the fork floor measured in the same run.

Usage::

    python benchmarks/local_scale.py [--repeat 3] [--sizes 1000,5000] [--handles 10000]
                                     [--dir DIR] [--fn main|operator] [--only map,single,handles]
                                     [--tree PATH]

Prints figures and ratios; nothing here is a test (issue "Local backend at
the speed of fork").  Goals: ``map_array(1000)`` -> all results at >= 70 % of
the fork floor (``fork_floor.py``, same machine, same run), >= 1,000 tasks/s as
a stretch; single submit -> result <= 10 ms; 10,000 handles: O(1) backend
``states()`` calls and O(1) folder listings per poll interval, not one per
handle, and <= 50 MB of client memory.

What it measures, with jobsub's public API only (plus counting wrappers):

- ``map_array(N)``: from the call to the last ``result()``, tasks/s, median
  and range over ``--repeat`` runs; and the CPU each task cost in the client,
  in the fork server and in the server's children (the server's pid is what a
  task's ``os.getppid()`` returns; its and its reaped children's CPU times are
  read from ``/proc``).
- single ``submit(fn, 1, 2).result()``: median and range.
- ``--handles`` handles of one array: creation (``map_array``, and the RSS it
  added; ``Job.attach`` of the folder under tracemalloc, and the memory those
  handles hold), then ``as_completed`` over all
  of them, then ``[j.result() for j in jobs]``; during each, how many times
  the backend's ``states()`` ran and how many folder listings
  (``os.listdir``/``os.scandir``), file opens and ``stat`` calls the client
  made, in total and per poll interval of the backend.

``--fn main`` (default) runs a function defined in this script, pickled by
value as users' own functions are; ``--fn operator`` runs ``operator.mul``,
pickled by reference.  ``--tree`` runs another checkout of jobsub (its
path goes first on ``sys.path`` and in ``PYTHONPATH``, so the fork server it
starts is that tree's too): ``benchmarks/ab_commits.py`` uses it to compare
commits in one run.
"""

from __future__ import annotations

import argparse
import builtins
import functools
import gc
import importlib.util
import operator
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _tree_from_argv() -> str:
    """``--tree PATH`` is read before jobsub is imported: it decides which jobsub that is."""
    if "--tree" in sys.argv:
        return os.path.abspath(sys.argv[sys.argv.index("--tree") + 1])
    return str(HERE.parent)


TREE = _tree_from_argv()
sys.path.insert(0, TREE)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (TREE, os.environ.get("PYTHONPATH")) if p)

import jobsub  # noqa: E402
from jobsub import helpers as _helpers  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def mul(a: int, b: int) -> int:
    """The task: lives in ``__main__``, so cloudpickle pickles it by value, as it does users' functions."""
    return a * b


def load_floor() -> Any:
    spec = importlib.util.spec_from_file_location("_fork_floor", HERE / "fork_floor.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- counting wrappers --------------------------------------------------------------------------
class Counts:
    """Calls the client made while counting: backend ``states()``, folder listings, opens, stats."""

    def __init__(self) -> None:
        self.states = self.listings = self.opens = self.stats = 0

    def __sub__(self, other: Counts) -> Counts:
        out = Counts()
        for name in vars(self):
            setattr(out, name, getattr(self, name) - getattr(other, name))
        return out

    def copy(self) -> Counts:
        return self - Counts()


COUNTS = Counts()


def _counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setattr(COUNTS, name, getattr(COUNTS, name) + 1)
        return fn(*args, **kwargs)

    return wrapper


@contextmanager
def counting(executor: jobsub.Executor) -> Iterator[None]:
    """Wrap the backend's ``states`` and the os/builtins calls that read the folder."""
    saved = (executor.backend.states, os.listdir, os.scandir, builtins.open, os.stat)
    executor.backend.states = _counting("states", executor.backend.states)  # type: ignore[method-assign]
    os.listdir = _counting("listings", os.listdir)
    os.scandir = _counting("listings", os.scandir)
    builtins.open = _counting("opens", builtins.open)
    os.stat = _counting("stats", os.stat)
    try:
        yield
    finally:
        executor.backend.states, os.listdir, os.scandir, builtins.open, os.stat = saved  # type: ignore[method-assign]


# -- CPU of the client, the server and its children --------------------------------------------
def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of ``pid``; NaN if it is gone (a server restarted)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan"), float("nan")
    utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
    return utime + stime, cutime + cstime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fmt_range(values: list[float], unit: str = "", digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


# -- sections --------------------------------------------------------------------------------------
def map_section(ex: jobsub.Executor, fn: Callable[[int, int], int], sizes: list[int], repeat: int, floor: float) -> None:
    for n in sizes:
        rates, cpu = [], []
        for _ in range(repeat):
            server = ex.submit(os.getppid).result()  # the fork server: every task is its child
            gc.collect()
            s0, c0, me0 = *proc_cpu(server), self_cpu()
            start = time.perf_counter()
            jobs = ex.map_array(fn, range(n), range(n))
            values = [j.result() for j in jobs]
            elapsed = time.perf_counter() - start
            time.sleep(0.3)  # let the server reap and book the last children
            s1, c1, me1 = *proc_cpu(server), self_cpu()
            assert values == [i * i for i in range(n)]
            rates.append(n / elapsed)
            cpu.append(((me1 - me0) / n * 1e3, (s1 - s0) / n * 1e3, (c1 - c0) / n * 1e3))
            del jobs, values
        med = statistics.median(rates)
        print(
            f"  map_array({n}) -> all results: {fmt_range(rates, ' tasks/s')}, "
            f"{med / floor:5.0%} of the floor"
        )
        cpu = [c for c in cpu if c[1] == c[1]] or cpu  # NaN: the server changed during that run
        client, srv, children = (statistics.median(c[i] for c in cpu) for i in range(3))
        print(f"    CPU per task (median): client {client:.2f} ms, server {srv:.2f} ms, children {children:.2f} ms")


def single_section(ex: jobsub.Executor, fn: Callable[[int, int], int], repeat: int) -> None:
    times = []
    for _ in range(max(20, repeat * 10)):
        start = time.perf_counter()
        ex.submit(fn, 1, 2).result()
        times.append((time.perf_counter() - start) * 1e3)
    print(f"  single submit -> result: {fmt_range(times, ' ms', 1)}  (goal <= 10 ms)")


def handles_section(ex: jobsub.Executor, fn: Callable[[int, int], int], n: int) -> None:
    interval = ex.backend.poll_interval_s
    print(f"  {n} handles (the backend's poll interval: {interval:g} s):")
    gc.collect()
    rss0 = _rss()
    start = time.perf_counter()
    jobs = ex.map_array(fn, range(n), range(n))
    created = time.perf_counter() - start
    gc.collect()
    rss = _rss() - rss0
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    start = time.perf_counter()
    attached = jobsub.Job.attach(jobs[0].paths.folder)
    attach_s = time.perf_counter() - start
    gc.collect()
    held = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(attached) == n
    del attached
    print(f"    creation: map_array {created:.2f} s (RSS +{rss / 2**20:.1f} MB); Job.attach of the folder "
          f"{attach_s:.2f} s under tracemalloc, holding {held / 2**20:.1f} MB  (goal <= 50 MB)")

    with counting(ex):
        c0, start = COUNTS.copy(), time.perf_counter()
        done = sum(1 for _ in _helpers.as_completed(jobs))  # its default poll frequency, 0.5 s
        waited = time.perf_counter() - start
        c1 = COUNTS.copy()
        results = [j.result() for j in jobs]
        got = time.perf_counter() - start - waited
        c2 = COUNTS.copy()
    assert done == n and results == [i * i for i in range(n)]
    for what, seconds, c in (("as_completed", waited, c1 - c0), ("[j.result() for j in jobs]", got, c2 - c1)):
        polls = max(1.0, seconds / interval)
        print(
            f"    {what}: {seconds:.2f} s ({n / seconds:.0f} tasks/s); per poll interval: "
            f"states() {c.states / polls:.1f}, listings {c.listings / polls:.1f}, "
            f"opens {c.opens / polls:.0f}, stats {c.stats / polls:.0f}  "
            f"(totals {c.states}, {c.listings}, {c.opens}, {c.stats})"
        )
    del jobs, results


def file_system(path: str) -> str:
    """The type of the file system holding ``path`` (the longest matching mount point in /proc/mounts)."""
    path, best, kind = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                point, fstype = line.split()[1:3]
                if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                    best, kind = point, fstype
    except OSError:
        pass
    return kind


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--handles", type=int, default=10_000)
    parser.add_argument("--dir", default=None, help="where job folders go (default: the system's temp dir)")
    parser.add_argument("--fn", choices=["main", "operator"], default="main")
    parser.add_argument("--only", default="floor,map,single,handles")
    parser.add_argument("--floor", type=float, default=None, help="use this floor (tasks/s) instead of measuring it")
    parser.add_argument("--tree", default=None, help="the jobsub checkout to run (default: this one)")
    ns = parser.parse_args()
    sections = ns.only.split(",")
    fn: Callable[[int, int], int] = mul if ns.fn == "main" else operator.mul
    print(f"jobsub {jobsub.__version__} from {os.path.dirname(jobsub.__file__)} on Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    where = ns.dir or tempfile.gettempdir()
    # each task creates ~7 files: on ext4 without a journal, creating files where many were deleted
    # in the last minutes costs ms each (the allocator skips recently deleted inodes), for the floor too
    print(f"  job folders under {where} ({file_system(where)})")
    floor = ns.floor or 0.0
    if not floor and ("floor" in sections or "map" in sections):
        floor = load_floor().floor(1000, [2, 3, 4], ns.repeat, base=ns.dir)
        print(f"  fork floor: {floor:.0f} tasks/s (best end to end)")
    # the server may still write an exit marker into a folder whose results are all in
    with tempfile.TemporaryDirectory(prefix="local-scale-", dir=ns.dir, ignore_cleanup_errors=True) as tmp:
        ex = jobsub.AutoExecutor(tmp, cluster="local")
        cold = time.perf_counter()
        ex.submit(fn, 1, 2).result()
        print(f"  first submit (may start the fork server): {time.perf_counter() - cold:.3f} s")
        if "map" in sections:
            map_section(ex, fn, [int(s) for s in ns.sizes.split(",")], ns.repeat, floor)
        if "single" in sections:
            single_section(ex, fn, ns.repeat)
        if "handles" in sections and ns.handles:
            handles_section(ex, fn, ns.handles)


if __name__ == "__main__":
    main()
