"""A parameter sweep: map_array submits ALL points as one array, then we gather results."""

import jobsub


def evaluate(learning_rate: float, seed: int) -> float:
    import random

    random.seed(seed)
    return round((learning_rate - 0.01) ** 2 + random.random() * 1e-4, 6)


if __name__ == "__main__":
    executor = jobsub.AutoExecutor(folder="runs/sweep")
    executor.update_parameters(timeout_min=10, array_parallelism=8)
    rates = [0.001, 0.003, 0.01, 0.03, 0.1]
    seeds = range(len(rates))
    jobs = executor.map_array(evaluate, rates, seeds)
    print(f"one array of {len(jobs)} tasks: {jobs[0].job_id.rsplit('_', 1)[0]}")
    for job in jobsub.helpers.as_completed(jobs, poll_frequency=0.1):
        print(f"  {job.job_id}: loss {job.result()}")
    best = min(zip((j.result() for j in jobs), rates))
    print(f"best learning rate: {best[1]} (loss {best[0]})")
