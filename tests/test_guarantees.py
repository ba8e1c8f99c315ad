"""Never a hang, never a false success, nothing lost: the hostile cases, with real faults.

Each test names the hole of the hostile trial it closes (docs/guarantees.md
lists them).  Faults are made as a user's machine makes them: a full disk is
a small tmpfs, a second user is a real Unix user (``useradd``), a killed
daemon is killed by pid, a damaged file is damaged on disk.  What is the same
on every backend lives in the behaviour suite (tests/conformance/); here is
what needs a fault of the machine.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobsub
from tests import docker_env, slurm_env, tasks

ROOT = Path(__file__).resolve().parent.parent


def _root_only(what: str) -> None:
    if os.getuid() != 0:
        pytest.skip(f"{what} needs root (CI runs the tests as root)")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: room for a job folder (and Docker's code package), which the job then fills."""
    _root_only("mounting a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def intruder() -> str:
    """A second Unix user of this machine."""
    _root_only("creating a second Unix user")
    name = "jobsub-intruder"
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        return name
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    return name




# -- 6. a job that fills its disk: typed error, and the shared server lives on -------------------------
def test_local_full_disk_is_reported_and_the_server_lives(full_disk: Path, tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(full_disk / "runs", cluster="local")
    job = ex.submit(tasks.fill_and_return, 7)
    with pytest.raises(jobsub.JobError, match="disk") as info:
        job.result(timeout=60)
    assert info.value.state == "FAILED"
    server = int(Path(ex.backend.config()["server"] + ".pid").read_text())
    other = jobsub.AutoExecutor(tmp_path / "elsewhere", cluster="local")  # same server, another folder
    assert other.submit(tasks.add, 1, 2).result(timeout=30) == 3
    assert int(Path(ex.backend.config()["server"] + ".pid").read_text()) == server


# -- 2. the same under Docker: no RUNNING forever, the container is removed -----------------------------
@pytest.mark.docker
def test_docker_full_disk_is_reported_and_cleaned_up(full_disk: Path) -> None:
    docker_env.require()
    import docker

    ex = jobsub.AutoExecutor(full_disk / "runs", cluster="docker")
    ex.update_parameters(**docker_env.parameters())
    job = ex.submit(tasks.fill_and_return, 7)
    start = time.monotonic()
    with pytest.raises(jobsub.JobError, match="disk"):
        job.result(timeout=90)
    assert time.monotonic() - start < 90
    api = docker.from_env().api
    deadline = time.monotonic() + 20
    while api.containers(all=True, filters={"label": [f"jobsub.key={job.folder.key}"]}):
        assert time.monotonic() < deadline, "the task's container was never removed"
        time.sleep(0.2)


# -- 5. a client killed while the backend accepts its submission: on every backend (tests/conformance/guarantees.py)


# -- 8. files another user could have written are never unpickled ------------------------------------------
def test_world_writable_folder_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by every user"):
        jobsub.AutoExecutor(shared, cluster="local")
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace what is ours
    jobsub.AutoExecutor(shared, cluster="local")


def test_a_result_another_user_wrote_is_never_unpickled(intruder: str) -> None:
    """The job folder was left writable; another user replaces the result with a pickle of theirs."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="jobsub-intrusion-"))  # outside pytest's private tmp: the intruder gets in
    try:
        base.chmod(0o755)
        ex = jobsub.AutoExecutor(base / "runs", cluster="local")
        job = ex.submit(tasks.add, 1, 2)
        assert job.result(timeout=30) == 3
        for path in (base / "runs", job.paths.folder):
            path.chmod(0o755)
        job.paths.result_pickle.parent.chmod(0o777)  # the mistake the attack needs
        evil = base / "evil.py"
        evil.write_text(textwrap.dedent(
            f"""
            import os, pickle
            path = {str(job.paths.result_pickle)!r}
            os.rename(path, path + ".old")
            with open(path, "wb") as f:
                f.write(pickle.dumps(os.system))  # what an attacker's pickle would run
            """
        ))
        evil.chmod(0o644)
        subprocess.run(["su", intruder, "-s", "/bin/sh", "-c", f"/usr/bin/python3 {evil}"], check=True)
        assert job.paths.result_pickle.stat().st_uid == pwd.getpwnam(intruder).pw_uid
        fresh: jobsub.Job[int] = jobsub.Job(ex.folder, job.job_id)
        with pytest.raises(jobsub.UncompletedJobError, match="belongs to uid"):
            fresh.result(timeout=10)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- 10, 12, 13. one damaged file hides nothing else -----------------------------------------------------------
def test_damaged_exit_record_and_meta_spoil_nothing_else(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local")
    damaged_exit, damaged_meta, fine = (ex.submit(tasks.add, i, i) for i in range(3))
    assert [j.result(timeout=30) for j in (damaged_exit, damaged_meta, fine)] == [0, 2, 4]
    record = damaged_exit.paths.folder / "exit" / "0.json"
    deadline = time.monotonic() + 10
    while not record.exists():  # the server records the end just after the result lands
        assert time.monotonic() < deadline
        time.sleep(0.02)
    record.write_text('{"state": "COMPL')
    (damaged_meta.paths.folder / "meta.json").write_text('{"backend": "lo')
    assert jobsub.Job(ex.folder, fine.job_id).result() == 4  # polled along with the damaged one
    assert jobsub.Job(ex.folder, damaged_exit.job_id).result() == 0  # its result still decides
    with pytest.raises(jobsub.CorruptResultError, match="meta.json is damaged"):
        jobsub.Job(ex.folder, damaged_meta.job_id)
    out = subprocess.run(
        [sys.executable, "-m", "jobsub.cli", "status", str(ex.folder)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 3, out.stderr  # a task failed, and a submission cannot be read
    lines = [line for line in out.stdout.splitlines()[1:] if not line.startswith("  ")]  # rows, not failures
    assert len(lines) == 3 and sum("cannot be read" in line for line in lines) == 1, out.stdout
    assert sum("COMPLETED" in line for line in lines) == 1 and sum("FAILED" in line for line in lines) == 1


# -- 15. what a task leaves behind never blocks the next server ------------------------------------------------


def test_a_process_a_task_leaves_behind_does_not_block_the_next_server(private_local_server: Path, tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local")
    lingering = ex.submit(tasks.leave_a_daemon_behind).result(timeout=30)
    try:
        (pid_file,) = private_local_server.glob("local-*.pid")
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        time.sleep(0.5)
        start = time.monotonic()
        again = jobsub.AutoExecutor(tmp_path / "runs2", cluster="local")
        assert again.submit(tasks.add, 2, 2).result(timeout=30) == 4
        assert time.monotonic() - start < 10  # not the 20 s "did not start" of a server kept from its lock
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(lingering, signal.SIGKILL)


# -- 16. a submit that lands while the server leaves for idleness -----------------------------------------------
def test_submits_racing_the_idle_exit_all_succeed(private_local_server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSUB_LOCAL_IDLE_S", "0.05")
    ex = jobsub.AutoExecutor(tmp_path / "runs", cluster="local")
    results = []
    for i in range(60):
        results.append(ex.submit(tasks.add, i, 1).result(timeout=30))
        time.sleep(0.01 * (i % 8))  # around the idle time, again and again
    assert results == [i + 1 for i in range(60)]


# -- also: what a task starts ends with it; cpus_per_task pins ----------------------------------------------


def test_a_tasks_subprocesses_end_with_it(local_executor: jobsub.AutoExecutor) -> None:
    child = local_executor.submit(tasks.start_a_child).result(timeout=30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the task's subprocess outlived it"
        time.sleep(0.05)




def test_cpus_per_task_pins_the_task(local_executor: jobsub.AutoExecutor) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("pinning needs a machine with 2 CPUs or more")
    local_executor.update_parameters(cpus_per_task=1)
    assert local_executor.submit(tasks.cpus).result(timeout=30) == 1


# -- secrets by reference (pass_env): on every backend (tests/conformance/guarantees.py) -----------------------


# -- 17. Slurm: a full disk under the shared state cache is no error ---------------------------------------------
SLURM_FULL_CACHE = textwrap.dedent(
    """
    import sys, jobsub
    from tests import tasks
    ex = jobsub.AutoExecutor(sys.argv[1], cluster="slurm")
    ex.update_parameters(mem_gb=0.25)
    print(ex.submit(tasks.add, 20, 22).result(timeout=120))
    """
)


@pytest.mark.slurm
def test_slurm_result_with_a_full_runtime_disk(full_disk: Path, tmp_path: Path) -> None:
    slurm_env.require()
    with contextlib.suppress(OSError), open(full_disk / "filler", "wb") as f:
        f.write(b"x" * 16 * 2**20)
    env = {**os.environ, "JOBSUB_LOCAL_DIR": str(full_disk)}
    out = subprocess.run(
        [sys.executable, "-c", SLURM_FULL_CACHE, str(tmp_path / "runs")], cwd=ROOT, env=env,
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "42"


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", " ", "x\\y", "x\ny"])
def test_a_job_id_that_is_a_path_is_refused(tmp_path: Path, bad: str) -> None:
    """``Job(folder, "../x")`` once read ``folder/../x/meta.json``: an id names a job, never a path."""
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "meta.json").write_text("{}")
    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(jobsub.InvalidParameterError, match="is not a job id"):
        jobsub.Job(runs, bad)
    assert subprocess.run(
        [sys.executable, "-m", "jobsub.cli", "cancel", str(runs), bad], capture_output=True, text=True, check=False
    ).returncode != 0
