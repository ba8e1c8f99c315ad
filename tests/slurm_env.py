"""The one-node Slurm cluster of scripts/start-slurm.sh, as the tests find it.

Shared by the Slurm suite class (tests/test_slurm.py) and the tests that
need a second backend beside another one (tests/test_graph.py...).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Any

from tests.conftest import skip_if


@functools.cache
def problem() -> str | None:
    """Why Slurm cannot be tested here, or None if it can."""
    if not shutil.which("sbatch"):
        return "Slurm is not installed (run scripts/start-slurm.sh as root)"
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, check=False)
    if probe.returncode or not probe.stdout.strip():
        return f"no Slurm controller answers (scripts/start-slurm.sh): {probe.stderr.strip()}"
    return None


def require() -> None:
    skip_if(problem())


def parameters() -> dict[str, Any]:
    """What an executor needs to run the test jobs here: nothing (Slurm's defaults)."""
    return {}
