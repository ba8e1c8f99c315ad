"""Fixtures and hooks every test module shares; nothing here knows a backend.

A backend opts into the shared suites with one test class (tests/conformance/:
``BackendSuite``) whose fixtures say how it runs here: ``service`` (skipped,
naming the script that starts what is missing) and ``backend_parameters``.
Tests outside a suite find a service through ``tests/<backend>_env.py``.  In
CI nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import jobsub


def skip_if(problem: str | None) -> None:
    """Skip the test, naming what this machine lacks (``<backend>_env.problem()``), if anything."""
    if problem:
        pytest.skip(problem)


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "", every: float = 0.05) -> None:
    """Look at ``predicate`` every ``every`` s until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what or 'condition'} not met after {timeout} s"
        time.sleep(every)


def _excluded(item: pytest.Item) -> bool:
    """Whether a test does not apply to its backend by design (a capability it lacks, or ``not_on``)."""
    callspec = getattr(item, "callspec", None)
    suite = getattr(item, "cls", None)  # a test function's class (pytest.Function has it, an Item need not)
    backend = callspec.params.get("backend") if callspec else getattr(suite, "cluster", None)
    not_on = item.get_closest_marker("not_on")
    if not_on and backend in not_on.args:
        return True
    needs = item.get_closest_marker("needs")
    if needs and backend:
        from jobsub.backends.base import load_backend_class

        capabilities = load_backend_class(backend).capabilities
        # a suite class may declare traits of its own (``fast_time_limits``) beside the capabilities,
        # or deny one its emulator lacks (moto does not limit a Batch job's memory)
        own = {name: getattr(suite, name, None) for name in needs.args}
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
