"""Hello, jobsub: submit one function, get its result back.

Run: python examples/hello.py            (uses Slurm if sbatch is on PATH, else local)
     JOBSUB_CLUSTER=debug python examples/hello.py
"""

import jobsub


def greet(name: str) -> str:
    import socket

    return f"hello {name} from {socket.gethostname()}"


if __name__ == "__main__":
    executor = jobsub.AutoExecutor(folder="runs/hello/%j")
    executor.update_parameters(timeout_min=5, mem_gb=1, slurm_partition=None)
    job = executor.submit(greet, "world")
    print(f"submitted job {job.job_id} to {executor.cluster}")
    print(job.result())
