"""Fixtures: one executor per backend that this machine can run.

``executor`` is parametrized over every backend; the Slurm and Docker
variants need the services that ``scripts/test.sh`` starts (a one-node Slurm
cluster, a Docker engine and the test image) and are skipped, naming what is
missing, where those are not running.  In CI nothing here is skipped.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import jobsub

BACKENDS = ["local", "debug", "slurm", "docker"]


@functools.cache
def service_problem(backend: str) -> str | None:
    """Why ``backend`` cannot be tested here, or None if it can."""
    if backend in ("local", "debug"):
        return None
    if backend == "slurm":
        if not shutil.which("sbatch"):
            return "Slurm is not installed (run scripts/start-slurm.sh as root)"
        probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, check=False)
        if probe.returncode or not probe.stdout.strip():
            return f"no Slurm controller answers (scripts/start-slurm.sh): {probe.stderr.strip()}"
        return None
    if backend == "docker":
        if not os.environ.get("JOBSUB_TEST_IMAGE"):
            return "JOBSUB_TEST_IMAGE is not set (scripts/build-test-image.sh builds it)"
        try:
            import docker

            docker.from_env().ping()
        except Exception as exc:
            return f"no Docker engine reachable (scripts/start-docker.sh): {exc}"
        return None
    if backend == "aws_batch":
        from tests import aws_batch_env

        return aws_batch_env.problem()
    if backend == "kubernetes":
        from tests import kube_env

        return kube_env.problem()
    return f"unknown backend {backend}"


def require(backend: str) -> None:
    problem = service_problem(backend)
    if problem:
        pytest.skip(problem)


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "", every: float = 0.05) -> None:
    """Look at ``predicate`` every ``every`` s until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what or 'condition'} not met after {timeout} s"
        time.sleep(every)


def backend_parameters(backend: str) -> dict[str, Any]:
    """What each backend needs to run the test jobs on this machine."""
    if backend == "docker":
        return {"docker_image": os.environ["JOBSUB_TEST_IMAGE"], "docker_network_mode": "host"}
    if backend == "aws_batch":
        from tests import aws_batch_env

        return aws_batch_env.parameters()
    if backend == "kubernetes":
        from tests import kube_env

        return kube_env.parameters()
    return {}


def _excluded(item: pytest.Item) -> bool:
    """Whether a test does not apply to its backend by design (a capability it lacks, or ``not_on``)."""
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec else getattr(item.cls, "cluster", None)
    not_on = item.get_closest_marker("not_on")
    if not_on and backend in not_on.args:
        return True
    needs = item.get_closest_marker("needs")
    if needs and backend:
        from jobsub.backends.base import load_backend_class

        capabilities = load_backend_class(backend).capabilities
        # a suite class may declare traits of its own (``fast_time_limits``) beside the capabilities,
        # or deny one its emulator lacks (moto does not limit a Batch job's memory)
        own = {name: getattr(item.cls, name, None) for name in needs.args}
        return not all(getattr(capabilities, n, False) if v is None else v for n, v in own.items())
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop (not skip) the tests a backend cannot pass by design: ``not_on``, or ``needs`` a capability it lacks."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if _excluded(item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    require(name)
    return name


@pytest.fixture
def executor(backend: str, tmp_path: Path) -> jobsub.AutoExecutor:
    ex = jobsub.AutoExecutor(folder=tmp_path / "runs", cluster=backend)
    ex.update_parameters(**backend_parameters(backend))
    return ex


@pytest.fixture
def local_executor(tmp_path: Path) -> jobsub.AutoExecutor:
    return jobsub.AutoExecutor(folder=tmp_path / "runs", cluster="local")


@pytest.fixture
def weird_tmp_path(tmp_path: Path) -> Path:
    """A folder name with quotes, spaces and a shell command in it."""
    path = tmp_path / "a'; echo foo \"b c\""
    path.mkdir()
    return path


@pytest.fixture
def private_local_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fork server of the test's own (its socket under tmp_path): the test may kill it."""
    monkeypatch.setenv("JOBSUB_LOCAL_DIR", str(tmp_path / "runtime"))
    from jobsub.runtime import code_version

    code_version.cache_clear()
    yield tmp_path / "runtime"
    for pid_file in (tmp_path / "runtime").glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
