"""jobsub vs submitit, measured in the same run on this machine.

Usage: ``python benchmarks/compare_submitit.py [--repeat 5] [--only local,slurm,docker]``

Prints figures and ratios; nothing here is a test.  Goals (issue "Core"):
single submit→result at least 5x faster than submitit's local executor,
map_array(100) → all results at least 20x faster.  The Slurm and Docker sections
run when those services are reachable (see scripts/start-*.sh).
"""

from __future__ import annotations

import argparse
import importlib.util
import operator
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobsub


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, ours: float, theirs: float | None, goal: str = "") -> None:
    if theirs is None:
        print(f"  {name:<34} jobsub {ours:8.3f} s")
        return
    print(f"  {name:<34} jobsub {ours:8.3f} s   submitit {theirs:8.3f} s   ratio {theirs / ours:6.1f}x  {goal}")


def local_section(repeat: int) -> None:
    import submitit

    print("local backend (cluster='local'):")
    with tempfile.TemporaryDirectory() as tmp:
        ours = jobsub.AutoExecutor(Path(tmp) / "jobsub", cluster="local")
        theirs = submitit.AutoExecutor(Path(tmp) / "submitit", cluster="local")
        theirs.update_parameters(timeout_min=5)
        cold = timed(lambda: ours.submit(operator.add, 1, 2).result())
        print(f"  first submit (may start the fork server): {cold:.3f} s")
        single_ours = statistics.median(timed(lambda: ours.submit(operator.add, 1, 2).result()) for _ in range(repeat))
        single_theirs = statistics.median(
            timed(lambda: theirs.submit(operator.add, 1, 2).result()) for _ in range(max(1, repeat // 2))
        )
        report("submit -> result (median)", single_ours, single_theirs, "(goal >= 5x)")

        def many(ex: Any) -> None:
            jobs = ex.map_array(operator.mul, range(100), range(100))
            assert [j.result() for j in jobs] == [i * i for i in range(100)]

        map_ours = statistics.median(timed(lambda: many(ours)) for _ in range(repeat))
        map_theirs = timed(lambda: many(theirs))
        report("map_array(100) -> all results", map_ours, map_theirs, "(goal >= 20x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="local,slurm,docker")
    ns = parser.parse_args()
    sections = ns.only.split(",")
    print(f"jobsub {jobsub.__version__} on Python {sys.version.split()[0]}")
    if "local" in sections:
        local_section(ns.repeat)
    here = Path(__file__).resolve().parent
    for name in ("slurm", "docker"):
        module_path = here / f"_{name}.py"
        if name not in sections or not module_path.exists():
            continue
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", module_path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.run(repeat=ns.repeat)


if __name__ == "__main__":
    main()
