"""Every script in examples/ runs and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "hello.py": "hello world from",
    "sweep.py": "best learning rate: 0.003",
    "errors.py": "hit its time limit: state TIMEOUT",
    "reattach.py": "result: 144",
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


# under the debug backend (hello.py advertises JOBSUB_CLUSTER=debug); reattach.py needs jobs that outlive
# their process, which debug jobs by design do not
EXPECTED_IN_PROCESS = {
    "hello.py": "hello world from",
    "sweep.py": "best learning rate: 0.003",
    "errors.py": "the job failed, as expected",
}


def _run(name: str, cluster: str, cwd: Path) -> str:
    env = {**os.environ, "JOBSUB_CLUSTER": cluster, "PYTHONPATH": str(EXAMPLES.parent)}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path) -> None:
    assert EXPECTED[name] in _run(name, "local", tmp_path)


@pytest.mark.parametrize("name", sorted(EXPECTED_IN_PROCESS))
def test_example_runs_on_the_debug_backend(name: str, tmp_path: Path) -> None:
    assert EXPECTED_IN_PROCESS[name] in _run(name, "debug", tmp_path)
