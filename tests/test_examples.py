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


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "JOBSUB_CLUSTER": "local", "PYTHONPATH": str(EXAMPLES.parent)}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert EXPECTED[name] in out.stdout
