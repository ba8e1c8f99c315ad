"""The local backend runs the behaviour suite; what is special to it: the fork server, requeue, folder hygiene."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jobsub
from tests import tasks
from tests.conformance.behaviour import BackendSuite


class TestLocalBehaviour(BackendSuite):
    cluster = "local"


def test_requeue_stops_after_max_num_timeout(local_executor: jobsub.AutoExecutor) -> None:
    class NeverDone(jobsub.helpers.Checkpointable):
        def __call__(self) -> None:
            time.sleep(60)

    local_executor.update_parameters(timeout_min=0.03, signal_delay_s=1, max_num_timeout=1)
    job = local_executor.submit(NeverDone())
    with pytest.raises(jobsub.JobTimeoutError, match=rf"job {job.job_id} \(task 0\): .*too many times") as info:
        job.result(timeout=60)
    assert "Logs: " in str(info.value) and info.value.job_id == job.job_id
    # submitit's words on the job's stdout, which its users grep for
    stdout = job.stdout() or ""
    assert "(0 remaining timeouts)" in stdout and "timed-out too many times" in stdout, stdout


def test_setup_lines_run_before_the_worker(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(setup=["export FROM_SETUP=yes"], env={"FROM_ENV": "1"})
    job = local_executor.submit(tasks.getenv, "FROM_SETUP")
    assert job.result(timeout=30) == "yes"
    assert local_executor.submit(tasks.getenv, "FROM_ENV").result(timeout=30) == "1"


def test_array_parallelism_is_respected(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(array_parallelism=2)
    jobs = local_executor.map_array(tasks.sleep_then, [0.3] * 6)
    for job in jobs:
        job.result(timeout=60)
    spans = [(j.usage[0]["start"], j.usage[0]["end"]) for j in jobs]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2


def test_folder_modes_follow_the_umask_and_keep_secrets_private(tmp_path: Path) -> None:
    """Who reads a job folder follows the umask (or folder_mode); nobody else writes; the environment stays private."""
    old = os.umask(0o077)
    try:
        ex = jobsub.AutoExecutor(tmp_path / "private", cluster="local")
        private = ex.submit(tasks.add, 1, 1)
        assert private.result(timeout=30) == 2
        os.umask(0o022)
        ex.update_parameters(folder_mode=0o750)
        shared = ex.submit(tasks.add, 1, 1)
        assert shared.result(timeout=30) == 2
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(private.paths.folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(shared.paths.folder).st_mode) == 0o750
    for path in shared.paths.folder.rglob("*"):
        assert stat.S_IMODE(path.lstat().st_mode) & 0o022 == 0 or path.is_symlink(), path  # nobody else writes
    for secret in ("meta.json", "local/spec.json"):  # they carry the job's environment
        assert stat.S_IMODE(os.stat(shared.paths.folder / secret).st_mode) == 0o600


def test_unwritable_folder_is_an_error_at_creation(tmp_path: Path) -> None:
    if os.getuid() == 0:
        target = Path("/proc/jobsub-cannot-write-here")  # even root cannot create this
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="cannot write job folders"):
        jobsub.AutoExecutor(target, cluster="local")


def test_corrupt_result_is_never_read(local_executor: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jobsub.job.RESULT_GRACE_S", 0.5)
    job = local_executor.submit(tasks.add, 1, 1)
    assert job.result(timeout=30) == 2
    path = job.paths.result_pickle
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a half-written file where a result should be
    with pytest.raises(jobsub.UncompletedJobError, match="damaged"):
        job.result()


def test_percent_j_folder_links_to_the_job(tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(tmp_path / "logs" / "%j", cluster="local")
    job = ex.submit(tasks.add, 2, 2)
    assert job.result(timeout=30) == 4
    link = tmp_path / "logs" / job.job_id
    assert (link / "meta.json").exists()
    assert jobsub.Job(tmp_path / "logs" / "%j", job.job_id).result() == 4


def test_nothing_is_written_into_the_folder_after_result_returns(tmp_path: Path) -> None:
    """A folder removed as soon as ``result()`` returns (a temporary directory) stays removed.

    The server records each end a moment after the task's result; without
    ``result()`` waiting for that record, ``rmtree`` raced it ("Directory not
    empty", or an ``exit/`` directory brought back).
    """
    for attempt in range(60):  # the race, unguarded, lost about one time in 25
        root = tmp_path / str(attempt)
        ex = jobsub.AutoExecutor(root, cluster="local")
        job = ex.submit(tasks.add, attempt, 1)
        assert job.result(timeout=30) == attempt + 1
        assert job.folder.read_exit(0) is not None
        shutil.rmtree(root)  # no ignore_errors: a late write would fail it
    time.sleep(0.2)
    assert list(tmp_path.iterdir()) == []


def test_weird_folder_names(weird_tmp_path: Path) -> None:
    ex = jobsub.AutoExecutor(weird_tmp_path, cluster="local")
    assert ex.submit(tasks.add, 1, 2).result(timeout=30) == 3


def test_server_is_shared_and_warm(local_executor: jobsub.AutoExecutor) -> None:
    """Two jobs are children of the same long-lived server, not new interpreters."""
    first = local_executor.submit(os.getppid).result(timeout=30)
    second = local_executor.submit(os.getppid).result(timeout=30)
    assert first == second != os.getpid()


def test_killed_job_reports_its_signal(local_executor: jobsub.AutoExecutor) -> None:
    job = local_executor.submit(tasks.sleep_then, 60)
    pid = _pid_of(job)
    os.kill(pid, 9)  # what the kernel's OOM killer would do
    with pytest.raises(jobsub.JobError, match="SIGKILL") as info:
        job.result(timeout=30)
    assert info.value.state == "FAILED"


def _pid_of(job: jobsub.Job[object], timeout: float = 10) -> int:
    """The pid of the task's rank 0, from its run record, once it started."""
    deadline = time.monotonic() + timeout
    while (run := job.folder.read_run(job.index)) is None:
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.02)
    return int(run["handles"]["0"][0])


def _server_pid(executor: jobsub.AutoExecutor) -> int:
    return int(Path(executor.backend.config()["server"] + ".pid").read_text())


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            children.append(int(entry))
    return children


def test_a_killed_spare_runner_costs_no_task(private_local_server: Path, tmp_path: Path) -> None:
    """The server keeps a runner forked ahead of the next submission; killed while it waits, the next
    task runs in another process (not handed to the dead one and failed)."""
    local_executor = jobsub.AutoExecutor(tmp_path / "runs", cluster="local")
    assert local_executor.submit(tasks.add, 1, 1).result(timeout=30) == 2
    server = _server_pid(local_executor)
    deadline = time.monotonic() + 10
    while not (spares := _children_of(server)):  # the task's own runner has left; the spare waits
        assert time.monotonic() < deadline, "the server keeps no spare runner"
        time.sleep(0.02)
    for pid in spares:
        os.kill(pid, 9)
    while set(spares) & set(_children_of(server)):  # dead (a task handed over while the kill lands
        time.sleep(0.01)                              # fails as killed, as any task whose process is)
    jobs = [local_executor.submit(tasks.add, i, 1) for i in range(3)]
    assert [j.result(timeout=30) for j in jobs] == [1, 2, 3]
    assert not set(spares) & {_pid_of(j) for j in jobs}


def test_killed_server_loses_nothing(local_executor: jobsub.AutoExecutor) -> None:
    """The fork server dies with one task running and three queued: another server takes them over.

    The running task (its own process group) outlives the server and its result
    counts; the queued ones, which lived in the dead server's memory, run from
    the folder's spec.  Nothing stays RUNNING or PENDING for ever.
    """
    local_executor.update_parameters(array_parallelism=1)
    jobs = local_executor.map_array(tasks.sleep_then, [1.0] * 4, range(4))
    _pid_of(jobs[0])
    os.kill(_server_pid(local_executor), 9)
    assert [j.result(timeout=60) for j in jobs] == [0, 1, 2, 3]
    assert {j.state for j in jobs} == {"COMPLETED"}


def test_task_that_vanished_unwatched_is_lost(local_executor: jobsub.AutoExecutor) -> None:
    """Killed together with its server (no result, no exit record): LOST, saying why, not RUNNING for ever."""
    job = local_executor.submit(tasks.sleep_then, 60)
    pid = _pid_of(job)
    os.kill(_server_pid(local_executor), 9)
    os.killpg(pid, 9)
    with pytest.raises(jobsub.JobLostError, match="without a result while no local job server watched it"):
        job.result(timeout=30)


def test_job_survives_its_submitter(tmp_path: Path) -> None:
    """The submitting interpreter exits at once; the job still finishes."""
    code = (
        "import jobsub, sys; from tests import tasks;"
        "ex = jobsub.AutoExecutor(sys.argv[1], cluster='local');"
        "print(ex.submit(tasks.sleep_then, 1, 'done').job_id)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=root, check=True)
    job = jobsub.Job(tmp_path, out.stdout.strip())
    assert job.state in ("PENDING", "RUNNING")
    assert job.result(timeout=30) == "done"


def test_stderr_to_stdout(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(stderr_to_stdout=True)
    job = local_executor.submit(tasks.print_and_return, "merged")
    job.result(timeout=30)
    assert "to stderr: merged" in (job.stdout() or "")
    assert job.stderr() is None


def test_memory_limit_counts_subprocesses_and_reports_out_of_memory(local_executor: jobsub.AutoExecutor) -> None:
    """mem_gb on this machine: the RSS of the task's whole process group, as a cgroup would count it."""

    def hog_in_a_subprocess(megabytes: int) -> int:
        code = f"import time; block = b'x' * ({megabytes} * 2**20); time.sleep(30)"
        return subprocess.run([sys.executable, "-c", code], check=False).returncode

    local_executor.update_parameters(mem_gb=0.15)
    under, over = local_executor.map_array(lambda mb: mb if mb < 100 else hog_in_a_subprocess(mb), [10, 300])
    assert under.result(timeout=60) == 10
    with pytest.raises(jobsub.OutOfMemoryError, match=r"held \d+ MiB, over the memory limit of 154 MiB \(mem_gb\)"):
        over.result(timeout=60)
    assert over.state == "OUT_OF_MEMORY"


# -- reused processes (runners) -------------------------------------------------------------------
def test_short_tasks_of_an_array_share_a_process_each_as_its_own(local_executor: jobsub.AutoExecutor) -> None:
    """A reused process gives each task its own index, environment, logs and result."""
    local_executor.update_parameters(array_parallelism=1)
    jobs = local_executor.map_array(tasks.report, range(4))
    results = [job.result(timeout=30) for job in jobs]
    assert len({r["pid"] for r in results}) == 1  # one process ran them all
    for i, (job, r) in enumerate(zip(jobs, results)):
        assert r["index"] == i and r["leftovers"] == [f"LEFT_BY_{i}"]
        assert job.stdout() == f"stdout of task {i}\n"
        assert job.stderr() == f"stderr of task {i}\n"
        assert job.state == "COMPLETED" and job.usage[0]["pid"] == r["pid"]


def test_a_task_that_kills_its_reused_process_takes_only_itself_down(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(array_parallelism=1)
    jobs = local_executor.map_array(tasks.die_at, range(5), [2] * 5)
    with pytest.raises(jobsub.JobError, match="SIGKILL"):
        jobs[2].result(timeout=30)
    pids = [job.result(timeout=30) for job in (jobs[0], jobs[1], jobs[3], jobs[4])]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2]  # the rest: a new fork
    assert jobs[2].state == "FAILED"


def test_a_task_that_leaves_a_thread_does_not_share_its_process(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(array_parallelism=1)
    jobs = local_executor.submit_array([tasks.leave_thread] * 3)
    assert len({job.result(timeout=30) for job in jobs}) == 3


def test_a_reused_process_keeps_each_task_to_its_time_limit(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(array_parallelism=1, timeout_min=0.02)  # 1.2 s
    jobs = local_executor.map_array(tasks.sleep_then, [0, 60, 0], [1, 2, 3])
    assert jobs[0].result(timeout=30) == 1
    with pytest.raises(jobsub.JobTimeoutError):
        jobs[1].result(timeout=30)
    assert jobs[2].result(timeout=30) == 3


def test_each_task_of_a_reused_process_reports_its_own_peak_memory(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(array_parallelism=1)
    jobs = local_executor.map_array(tasks.hold_memory, [200, 0])
    assert jobs[0].result(timeout=30) == jobs[1].result(timeout=30)
    big, small = (job.usage[0]["max_rss_mb"] for job in jobs)
    assert big > 200 and small < big - 150


@pytest.mark.parametrize("hostile", ["rlimit", "sigmask", "handler", "putenv", "nice", "itimer", "affinity"])
def test_what_a_task_changes_of_its_process_does_not_reach_the_next(
    local_executor: jobsub.AutoExecutor, hostile: str
) -> None:
    """A task that changes its process (and leaves it so) is followed by one that sees a fresh fork's state.

    The three tasks of one array, one at a time, share a reused process where reuse is safe; the
    last must see what the first saw, whether its process was put back or was a new fork.
    """
    local_executor.update_parameters(array_parallelism=1)
    before, _, after = (job.result(timeout=30) for job in local_executor.map_array(tasks.process_state, ["", hostile, ""]))
    assert {k: v for k, v in after.items() if k != "pid"} == {k: v for k, v in before.items() if k != "pid"}


def test_a_task_that_changes_what_can_be_put_back_keeps_its_process(local_executor: jobsub.AutoExecutor) -> None:
    """Putting the process back is what keeps reuse: a task that blocks a signal does not cost a fork."""
    local_executor.update_parameters(array_parallelism=1)
    jobs = local_executor.map_array(tasks.process_state, ["", "sigmask", "putenv", "itimer", ""])
    assert len({job.result(timeout=30)["pid"] for job in jobs}) == 1


def test_reuse_processes_false_forks_every_task(local_executor: jobsub.AutoExecutor) -> None:
    local_executor.update_parameters(array_parallelism=1, local_reuse_processes=False)
    jobs = local_executor.map_array(tasks.add, range(3), range(3))
    assert [job.result(timeout=30) for job in jobs] == [0, 2, 4]
    assert len({job.usage[0]["pid"] for job in jobs}) == 3


def test_short_cpu_bound_tasks_do_not_fan_out_to_array_parallelism(local_executor: jobsub.AutoExecutor) -> None:
    """200 tiny tasks: a few reused processes (one per CPU at first), not 200 forks at once."""
    jobs = local_executor.map_array(tasks.add, range(200), range(200))
    assert [job.result(timeout=60) for job in jobs] == [2 * i for i in range(200)]
    assert len({job.usage[0]["pid"] for job in jobs}) < 100


def test_tasks_that_sleep_get_more_processes(local_executor: jobsub.AutoExecutor) -> None:
    """Tasks blocked most of their time widen the window beyond one process per CPU."""
    jobs = local_executor.map_array(tasks.sleep_then, [0.3] * 24)
    for job in jobs:
        job.result(timeout=120)
    assert len({job.usage[0]["pid"] for job in jobs}) > len(os.sched_getaffinity(0))
