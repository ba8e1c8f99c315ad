"""submitit's helpers: CommandFunction, FunctionSequence, as_completed, clean_env, monitor_jobs, RsyncSnapshot."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jobsub
from jobsub import helpers
from tests import tasks


def test_command_function_returns_stdout() -> None:
    fn = helpers.CommandFunction([sys.executable, "-c", "import sys; print(sys.argv[1:])"], verbose=False)
    assert fn("a", flag=2) == "['a', '--flag=2']"


def test_command_function_failure_carries_stderr() -> None:
    fn = helpers.CommandFunction([sys.executable, "-c", "import sys; sys.exit('broken here')"], verbose=False)
    with pytest.raises(jobsub.FailedJobError, match="broken here"):
        fn()
    with pytest.raises(TypeError):
        helpers.CommandFunction("ls -l")  # type: ignore[arg-type]


def test_command_function_in_a_job(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(helpers.CommandFunction(["echo", "from a job"], verbose=False))
    assert job.result(timeout=30) == "from a job"


def test_function_sequence_runs_each_once() -> None:
    seq = helpers.FunctionSequence()
    seq.add(tasks.add, 1, 2)
    seq.add(tasks.add, a=3, b=4)
    assert len(seq) == 2 and seq() == [3, 7]
    assert all(d.done() for d in seq)


def test_checkpointable_needs_call() -> None:
    class NotCallable(helpers.Checkpointable):
        pass

    with pytest.raises(TypeError, match="no __call__"):
        NotCallable()


def test_as_completed(local_executor: jobsub.AutoExecutor) -> None:
    jobs = [local_executor.submit(tasks.sleep_then, s, s) for s in (0.6, 0.0)]
    order = [j.result() for j in helpers.as_completed(jobs, timeout=30, poll_frequency=0.05)]
    assert order == [0.0, 0.6]
    slow = local_executor.submit(tasks.sleep_then, 5)
    with pytest.raises(TimeoutError):
        list(helpers.as_completed([slow], timeout=0.2, poll_frequency=0.05))
    slow.cancel()


def test_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("RANK", "3")
    with helpers.clean_env():
        assert "SLURM_JOB_ID" not in os.environ and "RANK" not in os.environ
    assert os.environ["SLURM_JOB_ID"] == "12"


def test_job_environment_outside_a_job() -> None:
    with pytest.raises(RuntimeError, match="only available inside a job"):
        jobsub.JobEnvironment()


def test_torch_distributed_environment(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(tasks_per_node=2)
    envs = local_executor.submit(tasks.torch_env).results(timeout=30)
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert len({e["MASTER_PORT"] for e in envs}) == 1


def test_monitor_jobs_reports_until_all_are_done(local_executor: jobsub.AutoExecutor) -> None:
    jobs = local_executor.map_array(tasks.sleep_then, [0.0, 0.5])
    jobs.append(local_executor.submit(tasks.fail, "on purpose"))
    reports: list[dict[str, set[int]]] = []
    out = io.StringIO()
    jobsub.helpers.monitor_jobs(
        jobs, poll_frequency=0.1, custom_logging=lambda start, n, by_state: reports.append(dict(by_state)), stream=out
    )
    assert all(job.done() for job in jobs)
    assert reports and all(len(r["DONE"]) < 3 for r in reports)  # one per round until the last
    text = out.getvalue()
    assert text.startswith("Monitoring 3 jobs from job arrays ") and "indices [2] failed" in text


def _git_repo(root: Path) -> Path:
    root.mkdir()
    (root / "mod.py").write_text("VALUE = 1\n\ndef value():\n    return VALUE\n")
    (root / "notes.ipynb").write_text("{}")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "link.py").symlink_to("mod.py")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)
    (root / "untracked.py").write_text("")
    (root / "built.so").write_text("binary")
    return root


def test_rsync_snapshot_jobs_run_the_code_as_submitted(
    local_executor: jobsub.AutoExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edits made after submitting do not reach the job: it imports the snapshot's copy."""
    repo = _git_repo(tmp_path / "repo")
    monkeypatch.syspath_prepend(str(repo))
    monkeypatch.chdir(repo)
    snapshot = jobsub.helpers.RsyncSnapshot(tmp_path / "snap", exclude=["*.ipynb"], include=["built.so"])
    try:
        with snapshot:
            assert Path.cwd() == tmp_path / "snap"
            import mod  # type: ignore[import-not-found]

            assert Path(mod.__file__).parent == tmp_path / "snap"
            (repo / "mod.py").write_text("VALUE = 2\n\ndef value():\n    return VALUE\n")  # edited meanwhile
            job = local_executor.submit(mod.value)
            assert job.result(timeout=60) == 1
        assert Path.cwd() == repo and str(repo) in sys.path
        snap = tmp_path / "snap"  # (what Python caches there when it imports from it is not a copy)
        copied = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if "__pycache__" not in p.parts)
        assert copied == ["built.so", "link.py", "mod.py", "pkg", "pkg/__init__.py"]
        assert (tmp_path / "snap" / "link.py").is_symlink()
        with snapshot:  # taken again: the edit is in the snapshot now
            assert (tmp_path / "snap" / "mod.py").read_text().startswith("VALUE = 2")
    finally:
        sys.modules.pop("mod", None)
