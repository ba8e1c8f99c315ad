"""The Kubernetes backend's costs, on the real API server of scripts/start-kube.sh.

Run it where the tests run (``eval "$(scripts/start-kube.sh)"``, the Docker
engine and ``JOBSUB_CLOUD_TEST_IMAGE``)::

    python -m benchmarks.kubernetes [--repetitions 5]

It uses the tests' cluster (``tests.kube_env``: a namespace of its own, the
played Job controller and kubelet running pods as containers).  Printed as
one JSON object:

- ``map_array``: the API calls of ``map_array`` of 10,000 trivial tasks (the Job is deleted
  at once: its pods are not the point).  Goal: 1 Job create.
- ``poll``: the calls of one poll of several tracked Jobs while nothing failed.  Goal: 1 Job
  list + the pages of not-yet-succeeded pods.
- ``latency``: submit -> result of one trivial task, against a bare client creating the same
  Job (the manifest jobsub renders) and reading it every 0.1 s until Complete, alternated,
  medians of ``--repetitions``.  Goal: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import tempfile
import time
import uuid
from typing import Any

import jobsub
from jobsub.backends.kubernetes.manifest import job_manifest, job_name
from jobsub.backends.kubernetes.params import KubernetesParameters
from jobsub.parameters import CommonParameters


def _add(a: int, b: int) -> int:
    return a + b


def _executor(parameters: dict[str, Any]) -> jobsub.AutoExecutor:
    ex = jobsub.AutoExecutor(folder=f"{tempfile.gettempdir()}/jobsub-bench-k8s/{uuid.uuid4().hex[:8]}", cluster="kubernetes")
    ex.update_parameters(**parameters)
    return ex


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def map_array_calls(parameters: dict[str, Any]) -> dict[str, Any]:
    ex = _executor({**parameters, "array_parallelism": 1})
    api = ex.backend.api  # type: ignore[attr-defined]
    before = dict(api.counts)
    start = time.perf_counter()
    jobs = ex.map_array(_add, range(10_000), range(10_000))
    elapsed = time.perf_counter() - start
    calls = _delta(before, dict(api.counts))
    jobs[0].cancel()
    return {"tasks": len(jobs), "calls": calls, "submit_s": round(elapsed, 2)}


def poll_calls(parameters: dict[str, Any]) -> dict[str, Any]:
    ex = _executor(parameters)
    jobs = [ex.submit(_add, i, i) for i in range(5)]
    api = ex.backend.api  # type: ignore[attr-defined]
    before = dict(api.counts)
    ex.backend.states([j.job_id for j in jobs])
    calls = _delta(before, dict(api.counts))
    for job in jobs:
        job.result(timeout=120)
    return {"tracked_jobs": len(jobs), "calls": calls}


def _bare(cluster: Any, parameters: dict[str, Any]) -> float:
    """Create a Job running ``python3 -c pass`` and read it every 0.1 s until Complete."""
    batch = cluster.batch()
    spec = KubernetesParameters(namespace=cluster.namespace, image=parameters["k8s_image"])
    name = job_name(uuid.uuid4().hex)
    body = job_manifest(name, ["python3", "-c", "pass"], 1, CommonParameters(), spec,
                        root="bench", env={}, folder_path=None)
    # through the fault proxy, as jobsub's calls go, so the played controller sees the manifest
    from jobsub.cloud.kube import KubeGateway

    bare: Any = KubeGateway(cluster.kubeconfig).client("batch")  # the bare SDK client, called directly
    start = time.perf_counter()
    bare.create_namespaced_job(cluster.namespace, body)
    while True:
        job = bare.read_namespaced_job_status(name, cluster.namespace)
        if any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or []):
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    batch.delete_namespaced_job(name, cluster.namespace, propagation_policy="Background")
    return elapsed


def latency(cluster: Any, parameters: dict[str, Any], repetitions: int) -> dict[str, Any]:
    ex = _executor(parameters)
    ours, bare = [], []
    for _ in range(repetitions):
        start = time.perf_counter()
        assert ex.submit(_add, 1, 2).result(timeout=120) == 3
        ours.append(time.perf_counter() - start)
        bare.append(_bare(cluster, parameters))
    return {
        "jobsub_s": round(statistics.median(ours), 2),
        "bare_client_s": round(statistics.median(bare), 2),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    kube_env = importlib.import_module("tests.kube_env")
    problem = kube_env.problem()
    if problem:
        raise SystemExit(problem)
    parameters = kube_env.parameters()
    report = {
        "map_array": map_array_calls(parameters),
        "poll": poll_calls(parameters),
        "latency": latency(kube_env.cluster(), parameters, args.repetitions),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
