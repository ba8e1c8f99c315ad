"""The call cache: stable keys, what invalidates them, and reattaching across processes.

What the cache does on every backend (hits, reattach, a failed call submitted
again, automatic arrays) is in the behaviour suite (tests/conformance/dag.py);
here are the keys themselves and the cases that need several processes.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub.backends.base import get_backend
from jobsub.cache import call_key
from jobsub.calls import DelayedSubmission
from jobsub.hashing import function_digest, value_digest
from jobsub.parameters import CommonParameters, NoParameters, Resolved
from tests import tasks
from tests.conformance.cache import SUBMIT

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Point:
    x: float
    y: float


def _key_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    params = Resolved(CommonParameters(), NoParameters())
    return call_key(DelayedSubmission(fn, *args, **kwargs), params, get_backend("debug", {"root": "/tmp"})).key


_KEY_SCRIPT = textwrap.dedent(
    """
    import pathlib, sys
    from tests import tasks
    from tests.test_cache import Point, _key_of
    print(_key_of(tasks.add, {"b": 2, "a": [1.5, (2, "x")]}, pathlib.Path("/data/x"), point=Point(1, 2)))
    """
)


def test_keys_are_the_same_in_every_process() -> None:
    """No id(), no per-process string hashing: another interpreter (another hash seed) agrees."""
    here = _key_of(tasks.add, {"a": [1.5, (2, "x")], "b": 2}, Path("/data/x"), point=Point(1, 2))
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", _KEY_SCRIPT], capture_output=True, text=True, check=True, cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert out.stdout.strip() == here


def test_values_hash_by_content() -> None:
    assert value_digest({"a": 1, "b": 2}) == value_digest({"b": 2, "a": 1})  # equal dicts
    assert value_digest({1, 2, 3}) == value_digest({3, 2, 1})
    assert len({value_digest(v) for v in (1, 1.0, "1", [1], (1,), True, b"1")}) == 7
    assert value_digest([1, 2]) != value_digest([2, 1])
    assert value_digest(Point(1, 2)) == value_digest(Point(1, 2)) != value_digest(Point(2, 1))
    numpy = pytest.importorskip("numpy")
    assert value_digest(numpy.arange(6)) == value_digest(numpy.arange(6))
    assert value_digest(numpy.arange(6)) != value_digest(numpy.arange(6).reshape(2, 3))
    assert value_digest(numpy.arange(6)) != value_digest(numpy.arange(6.0))


class _SlowToPickle:
    def __init__(self, payload: int) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, ...]:
        time.sleep(0.08)
        return (_SlowToPickle, (self.payload,))


def test_unknown_types_hash_by_their_pickle_and_slow_ones_warn() -> None:
    with pytest.warns(RuntimeWarning, match="_SlowToPickle for the cache took"):
        first = value_digest(_SlowToPickle(1))
    assert value_digest(_SlowToPickle(1)) == first != value_digest(_SlowToPickle(2))


# -- what changes a function's key --------------------------------------------------------------------
_MODULE = """
SCALE = {scale}


def helper(x):
    return x * SCALE{helper_change}


def compute(x, offset={default}):
    return helper(x) + offset
"""


def _load(path: Path, name: str, **changes: Any) -> Any:
    fields = {"scale": 2, "helper_change": "", "default": 1, **changes}
    path.write_text(changes.pop("prefix", "") + _MODULE.format(**fields))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    # rewritten within a second at the same size, a module would be read back from its stale .pyc
    # (where PYTHONDONTWRITEBYTECODE is unset, as on most machines)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return tmp_path


def test_what_invalidates_a_functions_key(module_dir: Path) -> None:
    path = module_dir / "jobsub_cached_mod.py"
    base = function_digest(_load(path, "jobsub_cached_mod").compute)
    assert function_digest(_load(path, "jobsub_cached_mod", prefix="# moved down\n\n\n").compute) == base
    assert function_digest(_load(path, "jobsub_cached_mod", helper_change=" + 0").compute) != base  # a callee
    assert function_digest(_load(path, "jobsub_cached_mod", scale=3).compute) != base  # a module constant
    assert function_digest(_load(path, "jobsub_cached_mod", default=2).compute) != base  # a default
    assert function_digest(_load(path, "jobsub_cached_mod").compute) == base

    def closure(factor: int) -> Any:
        return lambda x: x * factor

    assert function_digest(closure(2)) == function_digest(closure(2)) != function_digest(closure(3))


_CONFIG_MODULE = """
import threading

{prefix}
CONFIG = {{"scale": {scale}, "names": ["a", ("b", {scale})]}}
LOCK = threading.Lock()


def scaled(x):
    return x * CONFIG["scale"]


def locked(x):
    with LOCK:
        return x
"""


def _load_config(path: Path, name: str, scale: int, prefix: str = "") -> Any:
    # a size of its own per version: the local backend's tasks import the module in processes of
    # their own, which do write .pyc files, and a rewrite within the same second at the same size
    # would be read back from the first version's .pyc there
    path.write_text(f"# {'v' * scale}\n" + _CONFIG_MODULE.format(scale=scale, prefix=prefix))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_module_containers_are_hashed_by_value(module_dir: Path, tmp_path: Path) -> None:
    """A dict the function reads is part of its key by value: 2 -> 3 is a miss with the new result,
    not the stale one; a global that cannot be hashed is an error naming it, unless the module
    leaves it out (``__jobsub_cache_ignore__``)."""
    path = module_dir / "jobsub_config_mod.py"
    module = _load_config(path, "jobsub_config_mod", 2)
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", cache=True)
    assert ex.submit(module.scaled, 5).result(timeout=60) == 10
    module = _load_config(path, "jobsub_config_mod", 3)
    assert ex.submit(module.scaled, 5).result(timeout=60) == 15
    assert function_digest(_load_config(path, "jobsub_config_mod", 2).scaled) != function_digest(module.scaled)
    with pytest.raises(jobsub.PicklingError, match="global 'LOCK'.*jobsub_config_mod.locked.*__jobsub_cache_ignore__"):
        function_digest(module.locked)
    module = _load_config(path, "jobsub_config_mod", 3, prefix='__jobsub_cache_ignore__ = {"LOCK"}')
    assert function_digest(module.locked) == function_digest(module.locked)


def test_a_code_change_is_a_miss_that_says_so(
    module_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = module_dir / "jobsub_cached_mod2.py"
    module = _load(path, "jobsub_cached_mod2")
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", cache=True)
    first = ex.submit(module.compute, 5)
    assert first.result(timeout=60) == 11
    assert ex.submit(module.compute, 5).job_id == first.job_id
    module = _load(path, "jobsub_cached_mod2", helper_change=" + 100")
    with caplog.at_level(logging.DEBUG, logger="jobsub.cache"):
        second = ex.submit(module.compute, 5)
    assert second.job_id != first.job_id and second.result(timeout=60) == 111
    assert "the code of jobsub_cached_mod2.compute (or of what it calls in its module) changed" in caplog.text
    with caplog.at_level(logging.DEBUG, logger="jobsub.cache"):
        ex.submit(module.compute, 6).result(timeout=60)
    assert "these arguments were not submitted before" in caplog.text


# -- across processes (the killed notebook's reattach, on every backend: tests/conformance/cache.py) ----------
def test_two_processes_submitting_the_same_call_submit_it_once(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SUBMIT.replace("time.sleep(600)", ""), str(folder), "local", "{}", "2"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for _ in range(2)
    ]
    keys = {p.communicate(timeout=120)[0].split()[0] for p in procs}
    assert len(keys) == 1
    assert [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] == list(keys)


def test_clean_removes_the_entries(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", cache=True)
    first = ex.submit(tasks.add, 1, 1)
    first.result(timeout=60)
    out = subprocess.run(
        [sys.executable, "-m", "jobsub.cli", "clean", "--cache", str(tmp_path / "runs")],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    assert "removed 1 cached call(s)" in out.stdout
    second = ex.submit(tasks.add, 1, 1)
    assert second.job_id != first.job_id
    plain = jobsub.AutoExecutor(tmp_path / "runs", cluster="local")
    assert jobsub.cached(plain).submit(tasks.add, 1, 1).job_id == second.job_id  # a caching copy
    assert plain.submit(tasks.add, 1, 1).cache_key is None  # the executor itself is unchanged


def test_failures_are_told_by_one_listing_and_older_folders_by_their_results(tmp_path: Path) -> None:
    """A failed task is marked in failed/ before its result, so an array's hits are judged by one
    listing; a folder written before the marks existed (no "failures_marked") is judged by reading
    its results, and a failed call is submitted again either way."""
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", cache=True)
    jobs = ex.map_array(tasks.fail_if, [False, True, False], [0, 1, 2])
    for job in jobs:
        job.exception(timeout=120)
    folder = jobs[0].folder
    assert folder.failed_since(1, [0], None)[0] and not folder.failed_since(0, [0], None)[0]
    with pytest.raises(FileExistsError):  # a twin's failure never marks a task that has its result
        folder.write_result(0, 0, b"late twin", ok=False)
    assert not folder.failed_since(0, [0], None)[0]

    fresh = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", cache=True)
    again = fresh.map_array(tasks.fail_if, [False, True, False], [0, 1, 2])
    assert [a.job_id == j.job_id for a, j in zip(again, jobs)] == [True, False, True]
    assert isinstance(again[1].exception(timeout=120), Exception)

    for old in (folder, again[1].folder):  # as an older jobsub wrote them: no marks to trust
        meta = old.read_meta()
        del meta["failures_marked"]
        old.write_meta(meta)
        for mark in (old.path / "failed").iterdir():
            mark.unlink()
    older = jobsub.AutoExecutor(tmp_path / "runs", cluster="local", cache=True)
    hits = older.map_array(tasks.fail_if, [False, True], [0, 1])
    assert hits[0].job_id == jobs[0].job_id  # a success, read from its result
    assert hits[1].job_id not in (jobs[1].job_id, again[1].job_id)  # a failure, read from its result
