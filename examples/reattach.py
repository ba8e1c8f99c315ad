"""Reattach: submit from one process, collect the result from another.

Run: python examples/reattach.py submit     -> prints a job id and exits at once
     python examples/reattach.py collect ID -> waits for that job and prints its result
     python examples/reattach.py            -> both, in two separate processes
"""

import subprocess
import sys
import time

import jobsub

FOLDER = "runs/reattach"


def slow_square(x: int) -> int:
    time.sleep(1)
    return x * x


if __name__ == "__main__":
    if sys.argv[1:2] == ["submit"]:
        job = jobsub.AutoExecutor(folder=FOLDER).submit(slow_square, 12)
        print(job.job_id)
    elif sys.argv[1:2] == ["collect"]:
        job = jobsub.Job(folder=FOLDER, job_id=sys.argv[2])
        print(f"job {job.job_id} is {job.state}; result: {job.result()}")
    else:
        job_id = subprocess.check_output([sys.executable, __file__, "submit"], text=True).strip()
        print(f"submitted {job_id} from a process that has now exited")
        subprocess.run([sys.executable, __file__, "collect", job_id], check=True)
