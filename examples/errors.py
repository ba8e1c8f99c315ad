"""What failures look like: a remote exception with its traceback, and a time limit."""

import time

import jobsub


def divide(a: float, b: float) -> float:
    return a / b


if __name__ == "__main__":
    executor = jobsub.AutoExecutor(folder="runs/errors")
    job = executor.submit(divide, 1, 0)
    try:
        job.result()
    except jobsub.FailedJobError as error:
        print("the job failed, as expected:")
        print(error)
        print("original exception type:", type(error.__cause__).__name__)
    except ZeroDivisionError as error:  # the debug backend raises the function's own exception
        print("the job failed, as expected (debug backend: the original exception):", error)

    if executor.cluster != "debug":
        executor.update_parameters(timeout_min=0.05)  # 3 seconds (Slurm rounds up to a minute)
        slow = executor.submit(time.sleep, 600)
        try:
            slow.result()
        except jobsub.JobTimeoutError as error:
            print(f"\n{slow.job_id} hit its time limit: state {error.state}")
