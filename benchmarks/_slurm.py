"""Slurm section of benchmarks/compare_submitit.py: jobsub vs bare sbatch vs submitit.

``run(repeat=N)`` (called by compare_submitit.py, or ``python benchmarks/_slurm.py``)
measures on the cluster of scripts/start-slurm.sh, every figure from submission
to the last of 100 tasks done:

1. bare scheduler: ``sbatch --array=0-99`` of ``python -c 'import cloudpickle'``,
   waited for with squeue (every 0.25 s);
2. jobsub: ``map_array`` of 100 trivial calls -> all 100 results;
3. submitit 1.5.4: the same ``map_array`` -> all results, with its defaults;

and prints jobsub/bare (goal <= 1.15) and submitit/jobsub (goal >= 1.3).  It then
tracks 1,000 held array tasks for a few poll intervals and counts the Slurm
commands: one squeue and one sacct per interval, whatever the number of jobs.
Every job asks for the same small memory, so 8 run side by side on the test node.
"""

from __future__ import annotations

import logging
import operator
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jobsub
from jobsub.backends.slurm import SlurmBackend
from jobsub.backends.slurm import query as q

logger = logging.getLogger("jobsub.benchmarks")

N = 100
MEM_GB = 0.25


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare(folder: Path) -> None:
    """A plain sbatch array of Python starts, waited for with squeue."""
    script = folder / "bare.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --array=0-{N - 1}\n#SBATCH --mem={int(MEM_GB * 1024)}M\n#SBATCH --output=/dev/null\n"
        f"exec {sys.executable} -c 'import cloudpickle'\n"
    )
    job_id = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True)
    base = job_id.stdout.strip()
    while True:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-o", "%T", "-j", base], capture_output=True, text=True, check=True
        ).stdout.split()
        if len(out) == N and all(state == "COMPLETED" for state in out):
            return
        if any(state in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY") for state in out):
            raise RuntimeError(f"bare array {base} failed: {Counter(out)}")
        time.sleep(0.25)


def with_jobsub(folder: Path) -> None:
    ex = jobsub.AutoExecutor(folder / "jobsub", cluster="slurm", mem_gb=MEM_GB)
    jobs = ex.map_array(operator.mul, range(N), range(N))
    if [j.result() for j in jobs] != [i * i for i in range(N)]:
        raise RuntimeError("jobsub returned wrong results")


def with_submitit(folder: Path) -> None:
    import submitit

    ex = submitit.AutoExecutor(folder / "submitit", cluster="slurm")
    ex.update_parameters(timeout_min=5, mem_gb=MEM_GB)
    jobs = ex.map_array(operator.mul, range(N), range(N))
    if [j.result() for j in jobs] != [i * i for i in range(N)]:
        raise RuntimeError("submitit returned wrong results")


def polling_cost(folder: Path, seconds: float = 7.0) -> Counter[str]:
    """Slurm commands run while 1,000 tracked (held) jobs are polled for ``seconds``."""
    ex = jobsub.AutoExecutor(folder / "poll", cluster="slurm", mem_gb=MEM_GB)
    ex.update_parameters(slurm_additional_parameters={"hold": True})
    jobs = ex.map_array(operator.mul, range(1000), range(1000))
    seen: Counter[str] = Counter()
    real = q._exec

    def counting(cmd: Any) -> subprocess.CompletedProcess[str]:
        seen[cmd[0]] += 1
        return real(cmd)

    q._exec = counting
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if any(j.done() for j in jobs):  # every handle asks, as 1,000 waiting callers would
                raise RuntimeError("held jobs cannot be done")
            time.sleep(0.1)
    finally:
        q._exec = real
        ex.backend.cancel([jobs[0].job_id.split("_")[0]])
    return seen


def run(repeat: int = 1) -> dict[str, float]:
    """Measure and print; returns the figures (seconds, medians over ``repeat`` runs)."""
    print(f"slurm backend (one-node cluster, {N}-task arrays, mem {MEM_GB} GB per task):")
    figures: dict[str, list[float]] = {"bare": [], "jobsub": [], "submitit": []}
    with tempfile.TemporaryDirectory(prefix="jobsub-bench-") as tmp:
        folder = Path(tmp)
        for _ in range(max(1, repeat)):
            figures["bare"].append(_timed(lambda: bare(folder)))
            figures["jobsub"].append(_timed(lambda: with_jobsub(folder)))
            figures["submitit"].append(_timed(lambda: with_submitit(folder)))
        medians = {name: statistics.median(values) for name, values in figures.items()}
        for name, value in medians.items():
            print(f"  {name:<10} map_array({N}) -> all results  {value:7.2f} s   (runs: "
                  f"{', '.join(f'{v:.2f}' for v in figures[name])})")
        print(f"  jobsub / bare      {medians['jobsub'] / medians['bare']:5.2f}   (goal <= 1.15)")
        print(f"  submitit / jobsub  {medians['submitit'] / medians['jobsub']:5.2f}   (goal >= 1.3)")
        interval = SlurmBackend.poll_interval_s
        seconds = 7.0
        calls = polling_cost(folder, seconds)
        print(
            f"  polling 1,000 tracked jobs for {seconds:g} s (interval {interval:g} s): "
            f"{calls['squeue']} squeue + {calls['sacct']} sacct calls (other: "
            f"{sum(v for k, v in calls.items() if k not in ('squeue', 'sacct'))})"
        )
        medians["poll_squeue"] = calls["squeue"]
        medians["poll_sacct"] = calls["sacct"]
    return medians


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=1)
    run(parser.parse_args().repeat)
