"""A real tool built on submitit runs with only the import changed.

hydra-submitit-launcher (Hydra's sweep launcher) imports ``submitit``; a
two-line module named ``submitit`` that re-exports jobsub is put first on
its path, so the launcher's own code drives jobsub unchanged: AutoExecutor
with prefixed keys, update_parameters, map_array, JobEnvironment,
DelayedSubmission checkpoints and job.results().
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed (pip install '.[test]')")

SHIM = """
import sys, jobsub
from jobsub import *  # noqa: F403
from jobsub import helpers, core
import jobsub.core.utils, jobsub.core.core, jobsub.core.job_environment
for name in ("helpers", "core", "core.utils", "core.core", "core.job_environment"):
    sys.modules[f"submitit.{name}"] = sys.modules[f"jobsub.{name}"]
"""

APP = """
import hydra
from omegaconf import DictConfig

@hydra.main(version_base=None, config_path=None)
def main(cfg: DictConfig) -> int:
    import submitit
    print(f"x={cfg.x} ran as {submitit.JobEnvironment().job_id} of {submitit.__file__}")
    return cfg.x * 2

if __name__ == "__main__":
    main()
"""


def test_hydra_submitit_launcher_sweep(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "submitit"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(textwrap.dedent(SHIM))
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'shim'}{os.pathsep}{Path(__file__).resolve().parent.parent}"}
    out = subprocess.run(
        [sys.executable, "app.py", "--multirun", "hydra/launcher=submitit_local", "+x=1,2,3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    logs = sorted(tmp_path.glob("multirun/*/*/.submitit/*/log/*.out"))
    texts = "".join(p.read_text() for p in logs)
    for x in (1, 2, 3):
        assert f"x={x} ran as " in texts
    assert str(shim) in texts, "the jobs must have run through jobsub's shim, not submitit"
