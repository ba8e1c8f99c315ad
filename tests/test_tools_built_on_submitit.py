"""Real tools built on submitit run on jobsub with nothing changed but the package behind ``submitit``.

Each tool runs in a subprocess whose path starts with jobsub's ``submitit``
alias (``jobsub install-submitit-alias`` into a temporary directory), so the
tool's own, unmodified code drives jobsub:

- hydra-submitit-launcher: a Hydra multirun sweep (AutoExecutor, map_array,
  JobEnvironment, checkpoint DelayedSubmission, job.results()).
- benchopt's ``submitit`` parallel backend: a tiny benchmark, locally and on
  the real Slurm cluster (``SlurmExecutor._equivalence_dict()``, Slurm time
  strings in ``slurm_time``, batch(), helpers.as_completed, JobEnvironment).
- dora (grid searches): it needs torch, so its calls are replayed here as it
  makes them (SlurmExecutor with native keys, pickled jobs read back by another
  process, ``_parse_node_list`` in the job, ``watcher``, ``<id>_0_log.out``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobsub.submitit_alias import install_alias
from tests import slurm_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def alias(tmp_path: Path) -> Path:
    """A directory holding jobsub's ``submitit`` alias, to put first on a tool's path."""
    site = tmp_path / "alias"
    site.mkdir()
    install_alias(site)
    return site


def _env(alias: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JOBSUB_CLUSTER"}
    return {**env, "PYTHONPATH": f"{alias}{os.pathsep}{ROOT}", **extra}


# -- hydra-submitit-launcher ------------------------------------------------------------

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


def test_hydra_submitit_launcher_sweep(tmp_path: Path, alias: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install '.[test]'")
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    out = subprocess.run(
        [sys.executable, "app.py", "--multirun", "hydra/launcher=submitit_local", "+x=1,2,3"],
        cwd=tmp_path, env=_env(alias), capture_output=True, text=True, timeout=180, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    logs = sorted(tmp_path.glob("multirun/*/*/.submitit/*/log/*.out"))
    texts = "".join(p.read_text() for p in logs)
    for x in (1, 2, 3):
        assert f"x={x} ran as " in texts
    assert str(alias) in texts, "the jobs must have run through jobsub's alias, not submitit"


# -- benchopt ---------------------------------------------------------------------------

OBJECTIVE = """
from benchopt import BaseObjective

class Objective(BaseObjective):
    name = "tiny"
    def set_data(self, x): self.x = x
    def get_one_result(self): return dict(beta=0.0)
    def evaluate_result(self, beta): return dict(value=(beta - self.x) ** 2)
    def get_objective(self): return dict(x=self.x)
"""

DATASET = """
from benchopt import BaseDataset

class Dataset(BaseDataset):
    name = "simple"
    parameters = {"x": [1.0, 2.0]}
    def get_data(self): return dict(x=self.x)
"""

SOLVER = """
from benchopt import BaseSolver

class Solver(BaseSolver):
    name = "half"
    sampling_strategy = "run_once"
    def set_objective(self, x): self.x = x
    def run(self, _):
        import submitit
        self.beta = self.x / 2
        print("benchopt job", submitit.JobEnvironment().job_id, "via", submitit.__file__, flush=True)
    def get_result(self): return dict(beta=self.beta)
"""


def _benchmark(where: Path) -> Path:
    bench = where / "bench"
    for name, text in {"objective.py": OBJECTIVE, "datasets/simple.py": DATASET, "solvers/half.py": SOLVER}.items():
        (bench / name).parent.mkdir(parents=True, exist_ok=True)
        (bench / name).write_text(textwrap.dedent(text))
    return bench


def _run_benchopt(bench: Path, alias: Path, config: str, **env: str) -> None:
    (bench / "parallel.yml").write_text(textwrap.dedent(config))
    out = subprocess.run(
        [sys.executable, "-m", "benchopt", "run", str(bench), "--parallel-config", str(bench / "parallel.yml"),
         "-n", "1", "-r", "1", "--no-plot", "--timeout", "100"],
        cwd=bench, env=_env(alias, **env), capture_output=True, text=True, timeout=280, check=False,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "Distributed run with backend: submitit" in out.stdout
    import pandas as pd

    (results,) = (bench / "outputs").glob("*.parquet")
    table = pd.read_parquet(results).sort_values("dataset_name")
    # beta = x / 2, so (beta - x)^2 = x^2 / 4: the solver ran, in a job, for each dataset
    assert list(table["objective_value"]) == [0.25, 1.0]
    logs = "".join(p.read_text() for p in (bench / "benchopt_run").glob("*/log/*.out"))
    assert logs.count("benchopt job ") == 2 and str(alias) in logs, logs


def test_benchopt_submitit_backend_locally(tmp_path: Path, alias: Path) -> None:
    pytest.importorskip("benchopt", reason="pip install '.[test]'")
    # benchopt's YAML as its users write it: a Slurm time string, which the local backend reads too
    _run_benchopt(_benchmark(tmp_path), alias, """
        backend: submitit
        slurm_time: "00:05:00"
    """, JOBSUB_CLUSTER="local")


@pytest.mark.slurm
def test_benchopt_submitit_backend_on_slurm(tmp_path: Path, alias: Path) -> None:
    pytest.importorskip("benchopt", reason="pip install '.[test]'")
    slurm_env.require()
    bench = _benchmark(tmp_path)
    _run_benchopt(bench, alias, """
        backend: submitit
        slurm_time: "00:05:00"
        slurm_mem: 500M
        slurm_cpus_per_task: 1
    """)
    (script,) = (bench / "benchopt_run").glob("*/slurm/0.sh")
    assert "#SBATCH --time=5\n" in script.read_text() and "#SBATCH --mem=500M\n" in script.read_text()


# -- dora's calls -------------------------------------------------------------------------

DORA_SUBMIT = """
import os, pickle, sys
from pathlib import Path
import submitit
from submitit import SlurmJob

def train(a):
    from submitit.slurm.slurm import _parse_node_list
    env = submitit.JobEnvironment()
    master = _parse_node_list(os.environ["SLURM_JOB_NODELIST"])[0]
    print("dora xp", a, "rank", env.global_rank, "of", env.num_tasks, "master", master, flush=True)
    return a * 10

folder = Path(sys.argv[1])
executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=20, python=None)
executor.update_parameters(
    job_name="dora_xp", stderr_to_stdout=True, partition="debug", time=5, mem="1GB", constraint="",
    comment=None, setup=[], srun_args=[], array_parallelism=256, exclude=None, qos=None, account=None,
    nodes=1, ntasks_per_node=1, cpus_per_task=1, additional_parameters={},
)
with executor.batch():
    jobs = [executor.submit(train, a) for a in (2, 3)]
for job in jobs:
    with open(folder / f"{job.job_id}.pkl", "wb") as f:
        pickle.dump((job, jobs, []), f)
print(" ".join(job.job_id for job in jobs))
"""

DORA_READ = """
import pickle, sys
from pathlib import Path
folder = Path(sys.argv[1])
for path in sorted(folder.glob("*.pkl")):
    with open(path, "rb") as f:
        job, others, dependents = pickle.load(f)
    print(job.job_id, job.result(), job.state, len(others))
"""


@pytest.mark.slurm
def test_dora_submission_and_reload_on_slurm(tmp_path: Path, alias: Path) -> None:
    slurm_env.require()
    folder = tmp_path / "xp" / "submitit"
    folder.mkdir(parents=True)
    scripts = {"submit.py": DORA_SUBMIT, "read.py": DORA_READ}
    for name, text in scripts.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    submitted = subprocess.run([sys.executable, "submit.py", str(folder)], cwd=tmp_path, env=_env(alias),
                               capture_output=True, text=True, timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    ids = submitted.stdout.split()
    # another process, as dora's next command: the pickled handles come back and wait
    read = subprocess.run([sys.executable, "read.py", str(folder)], cwd=tmp_path, env=_env(alias),
                          capture_output=True, text=True, timeout=240, check=False)
    assert read.returncode == 0, read.stderr[-3000:]
    assert sorted(read.stdout.split("\n")[:2]) == sorted([f"{ids[0]} 20 COMPLETED 2", f"{ids[1]} 30 COMPLETED 2"])
    logs = "".join(p.read_text() for p in folder.glob("*/log/*.out"))
    assert "dora xp 2 rank 0 of 1 master " in logs and "dora xp 3 rank 0 of 1 master " in logs
