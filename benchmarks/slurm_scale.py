"""Slurm at scale: ``map_array(10_000)`` is ⌈N / MaxArraySize⌉ sbatch calls and one squeue per poll.

Usage: ``python benchmarks/slurm_scale.py [--tasks 10000] [--seconds 8]`` on the cluster of
scripts/start-slurm.sh.  Prints figures and call counts; nothing here is a test.

The arrays are submitted held (``--hold``), counted, polled for a few intervals by every
handle (as 10,000 waiting callers would), then cancelled: running 10,000 tasks on this one
test node would take a quarter of an hour and measure the node, not jobsub.  The bare figure
is the same number of ``sbatch --array`` calls of a trivial script, held too, in the same run.
"""

from __future__ import annotations

import argparse
import math
import operator
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobsub
from jobsub.backends.slurm import query as q


def max_array_size() -> int:
    text = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def bare(folder: Path, tasks: int, cap: int) -> tuple[float, list[str]]:
    """The same arrays with plain sbatch (held); returns the time and the ids."""
    script = folder / "bare.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --output=/dev/null\n#SBATCH --hold\nexec {sys.executable} -c pass\n")
    ids = []
    start = time.perf_counter()
    for offset in range(0, tasks, cap):
        n = min(cap, tasks - offset)
        out = subprocess.run(
            ["sbatch", "--parsable", f"--array=0-{n - 1}", str(script)], capture_output=True, text=True, check=True
        )
        ids.append(out.stdout.strip().split(";")[0])
    return time.perf_counter() - start, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    ns = parser.parse_args()
    cap = max_array_size()
    seen: Counter[str] = Counter()
    real = q._exec

    def counting(cmd: Any) -> subprocess.CompletedProcess[str]:
        seen[cmd[0]] += 1
        return real(cmd)

    q._exec = counting
    with tempfile.TemporaryDirectory(prefix="jobsub-bench-") as tmp:
        folder = Path(tmp)
        bare_s, bare_ids = bare(folder, ns.tasks, cap)
        subprocess.run(["scancel", *bare_ids], check=False)
        ex = jobsub.AutoExecutor(folder / "runs", cluster="slurm", mem_gb=0.25)
        ex.update_parameters(slurm_additional_parameters={"hold": True})
        start = time.perf_counter()
        jobs = ex.map_array(operator.mul, range(ns.tasks), range(ns.tasks))
        ours_s = time.perf_counter() - start
        submitted = dict(seen)
        seen.clear()
        try:
            end = time.monotonic() + ns.seconds
            polls = 0
            while time.monotonic() < end:
                if any(j.done() for j in jobs):
                    raise RuntimeError("held jobs cannot be done")
                polls += 1
                time.sleep(0.2)
        finally:
            q._exec = real
            ex.backend.cancel(sorted({j.job_id.split("_")[0] for j in jobs}))
    expected = math.ceil(ns.tasks / cap)
    print(f"slurm: map_array({ns.tasks}) with MaxArraySize {cap}")
    print(f"  sbatch calls: {submitted.get('sbatch', 0)} (goal: ceil(N / MaxArraySize) = {expected}); "
          f"other commands at submission: { {k: v for k, v in submitted.items() if k != 'sbatch'} }")
    print(f"  submission: jobsub {ours_s:.2f} s (writes {ns.tasks} argument files), bare {expected} sbatch "
          f"calls {bare_s:.2f} s, ratio {ours_s / bare_s:.2f}")
    interval = jobsub.backends.slurm.SlurmBackend.poll_interval_s
    print(f"  {polls} rounds of {ns.tasks} handles asking done() over {ns.seconds:g} s (poll interval "
          f"{interval:g} s): {seen['squeue']} squeue + {seen['sacct']} sacct calls")


if __name__ == "__main__":
    main()
