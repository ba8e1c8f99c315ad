"""The Slurm backend, against the real one-node cluster of scripts/start-slurm.sh.

Pure tests (sbatch script golden files, parsers) run anywhere; the others need
the cluster and skip, saying why, without it.  The two slow jobs (a time limit
and a checkpoint/requeue, about 80 s) are submitted when the module starts
and checked by the last test, so they run while the other tests do.

Set JOBSUB_UPDATE_GOLDEN=1 to rewrite tests/golden/ after an intended change.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobsub
from jobsub import JobState
from jobsub.backends.base import Launch
from jobsub.backends.slurm import SlurmBackend, SlurmParameters
from jobsub.backends.slurm import backend as slurm_module
from jobsub.backends.slurm import query as q
from jobsub.backends.slurm.script import sbatch_script
from jobsub.parameters import CommonParameters, Resolved
from jobsub.polling import poller_for
from tests import slurm_env, tasks
from tests.conformance.behaviour import BackendSuite

pytestmark = pytest.mark.slurm

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parent.parent
SMALL = {"mem_gb": 0.25}  # the node has 16 GB and 8 CPUs: small jobs run side by side


def hog(megabytes: int) -> int:
    """Touch ``megabytes`` of memory (bytes multiplication writes every page)."""
    data = b"x" * (megabytes * 2**20)
    return len(data)


@pytest.fixture
def cluster() -> None:
    slurm_env.require()


@pytest.fixture
def ex(cluster: None, tmp_path: Path) -> jobsub.AutoExecutor:
    executor = jobsub.AutoExecutor(tmp_path / "runs", cluster="slurm")
    executor.update_parameters(**SMALL)
    return executor


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every Slurm command the backend runs, recorded (they still run for real)."""
    seen: list[list[str]] = []
    real = q._exec

    def recording(cmd: Any) -> subprocess.CompletedProcess[str]:
        seen.append(list(cmd))
        return real(cmd)

    monkeypatch.setattr(q, "_exec", recording)
    return seen


def _names(calls: list[list[str]]) -> list[str]:
    return [c[0] for c in calls]


# -- the two slow jobs, started with the module ------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def slow_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, jobsub.Job[Any]] | None]:
    """A job over its 1 min limit and a checkpointable one, submitted once, checked at the end."""
    if slurm_env.problem():
        yield None
        return
    executor = jobsub.AutoExecutor(tmp_path_factory.mktemp("slow") / "runs", cluster="slurm")
    executor.update_parameters(timeout_min=1, **SMALL)
    jobs = {"timeout": executor.submit(tasks.sleep_then, 150)}
    # the warning comes when 50 s are left, at Slurm's next limit check (every ~30 s)
    executor.update_parameters(slurm_signal_delay_s=50)
    jobs["checkpoint"] = executor.submit(tasks.SlowCounter(), 150)
    # someone waits on them meanwhile, as a user would: the poll that releases a requeued job
    # (Slurm holds it 120 s) comes from whoever polls, here every 2 s
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(2.0):
            for job in jobs.values():
                job.done()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    yield jobs
    stop.set()
    watcher.join()
    executor.backend.cancel([j.job_id for j in jobs.values() if not j.done()])


class TestSlurmBehaviour(BackendSuite):
    cluster = "slurm"

    @pytest.fixture
    def service(self) -> None:
        slurm_env.require()
    fast_time_limits = False  # whole minutes: the slow jobs above cover the limit and the checkpoint


# -- pure: the sbatch script --------------------------------------------------------------
def _script(folder: Path, n_tasks: int, params: Resolved, *, array: bool, offset: int = 0) -> str:
    """The sbatch script as the backend writes it (the executor puts the ``env`` key into the launch)."""
    launch = Launch(str(folder), "slurm", offset=offset, task_env=SlurmBackend.task_env, env=params.common.env)
    return sbatch_script(launch, n_tasks, params, folder, array=array, python="/usr/bin/python3")


def _resolved(keys: dict[str, Any], dependencies: tuple[str, ...] = ()) -> Resolved:
    """Parameters as the executor resolves them: common keys and Slurm's own, by name."""
    common = {k: v for k, v in keys.items() if k in CommonParameters.__dataclass_fields__}
    specific = {k: v for k, v in keys.items() if k not in common}
    return Resolved(CommonParameters(**common), SlurmParameters(**specific), dependencies)


GOLDEN_CASES: dict[str, tuple[dict[str, Any], int, bool, tuple[str, ...]]] = {
    "single": ({}, 1, False, ()),
    "array_full": (
        {
            "name": "my job", "timeout_min": 2.5, "mem_gb": 4, "mem_per_cpu": "1G", "cpus_per_task": 2,
            "gpus_per_node": 1, "array_parallelism": 2, "partition": "debug", "qos": "high",
            "account": "proj", "comment": "it's mine", "exclusive": True, "constraint": "a100",
            "env": {"DATA": "/d/it's here"}, "setup": ["module load cuda", "echo $SLURM_JOB_ID"],
            "dependency": "afterany:7", "additional_parameters": {"begin_time": None, "hint": "nomultithread"},
        },
        5, True, ("12", "13_4"),
    ),
    "multitask_srun": (
        {
            "tasks_per_node": 3, "nodes": 2, "cpus_per_task": 4, "mem_gb": 0.5, "signal_delay_s": 30,
            "srun_args": ["--mpi=pmix"], "teardown": ["echo bye"], "python": "singularity exec img.sif python",
        },
        1, False, (),
    ),
    "teardown_forwards_signal": ({"teardown": ["echo teardown ran"], "use_srun": False}, 3, True, ()),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_sbatch_script_golden(case: str, weird_tmp_path: Path) -> None:
    """The script for each parameter set matches tests/golden/<case>.sh, in a folder named to break quoting."""
    keys, n_tasks, array, deps = GOLDEN_CASES[case]
    folder = weird_tmp_path / "runs" / "KEY"
    text = _script(folder, n_tasks, _resolved(keys, deps), array=array, offset=6 if array else 0)
    text = text.replace(str(weird_tmp_path.parent), "{TMP}")
    golden = GOLDEN / f"{case}.sh"
    if os.environ.get("JOBSUB_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs (JOBSUB_UPDATE_GOLDEN=1 rewrites it if intended)"
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_short_limit_rounds_up_with_a_warning_and_signals_half_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """3 seconds become Slurm's 1 minute, said aloud; the 90 s default warning would fire at the start."""
    folder = tmp_path / "KEY"
    with caplog.at_level(logging.WARNING, logger="jobsub.slurm"):
        text = _script(folder, 1, _resolved({"timeout_min": 0.05}), array=False)
    assert "#SBATCH --time=1\n" in text and "#SBATCH --signal=B:USR2@30\n" in text
    assert "timeout_min=0.05: Slurm counts whole minutes, so the limit is 1 min" in caplog.text


def test_script_quoting_survives_the_shell(weird_tmp_path: Path) -> None:
    """Run by bash, the script hands the worker its weird folder path and env values intact."""
    folder = weird_tmp_path / "runs" / "KEY"
    keys = {"python": "printf '<%s>\\n'", "env": {"ODD": "a'b \"c\" $HOME"}, "setup": ['echo "rq=$JOBSUB_REQUEUE_COMMAND odd=$ODD"']}
    script = weird_tmp_path / "s.sh"
    script.write_text(_script(folder, 3, _resolved(keys), array=True))
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_ID": "43"}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=True).stdout
    assert "rq=scontrol requeue 41_2 odd=a'b \"c\" $HOME" in out  # an array task requeues itself, not its array
    assert f"<{folder}>" in out.splitlines()


def test_percent_in_the_folder_is_not_a_slurm_pattern(tmp_path: Path) -> None:
    """Slurm expands %j in --output: a literal % of the folder path is written %%."""
    folder = tmp_path / "50%j" / "KEY"
    text = _script(folder, 1, _resolved({}), array=False)
    assert f"#SBATCH --output={tmp_path}/50%%j/KEY/slurm/%j.out\n" in text


def test_teardown_script_forwards_the_checkpoint_signal(tmp_path: Path) -> None:
    """With teardown lines the batch shell stays: USR2 sent to it (B:USR2) reaches the worker."""
    handler = "lambda *_: (print('worker got USR2', flush=True), sys.exit(0))"
    body = f"import signal, sys, time; signal.signal(signal.SIGUSR2, {handler}); print('ready', flush=True); time.sleep(30)"
    worker = f"{sys.executable} -c {shlex.quote(body)}"
    keys = {"python": worker, "teardown": ["echo teardown ran"]}
    script = tmp_path / "s.sh"
    script.write_text(_script(tmp_path, 1, _resolved(keys), array=False))
    assert "#SBATCH --signal=B:USR2@90" in script.read_text()
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=10)
    assert out.split() == ["worker", "got", "USR2", "teardown", "ran"] and proc.returncode == 0


def test_every_submitit_key_is_accepted() -> None:
    """Each key of submitit's SlurmExecutor is a SlurmParameters field or an alias of a common key."""
    from submitit.slurm.slurm import _get_default_parameters

    fields = set(SlurmParameters.__dataclass_fields__)
    common = set(CommonParameters.__dataclass_fields__)
    for key in _get_default_parameters():
        target = SlurmBackend.aliases.get(key, key)
        assert target in fields or target in common, key
        assert not (key in fields and key in common), f"{key} is duplicated"


# -- pure: parsing --------------------------------------------------------------------------
def test_expand_compressed_array_ids() -> None:
    """sacct's compressed pending tasks become one id per task."""
    assert q.expand_ids("14_[4-6%2]") == ["14_4", "14_5", "14_6"]
    assert q.expand_ids("123_[1,3,5-7]") == ["123_1", "123_3", "123_5", "123_6", "123_7"]
    assert q.expand_ids("63_1") == ["63_1"] and q.expand_ids("7") == ["7"]


def test_parse_sacct_takes_the_worst_step() -> None:
    """An srun step out of memory makes a FAILED job OUT_OF_MEMORY; other states keep theirs."""
    rows = q.parse_sacct(
        "39|FAILED|1:0|0:125|None\n39.batch|FAILED|1:0||\n39.0|OUT_OF_MEMORY|0:125||\n"
        "40|CANCELLED by 0|0:0|0:0|None\n41|TIMEOUT|0:0|0:0|None\n41.batch|CANCELLED|0:15||\n"
        "14_[4-5%2]|PENDING|0:0|0:0|JobArrayTaskLimit\n63_1|FAILED|3:0|0:0|None\n"
    )
    assert rows["39"].state is JobState.OUT_OF_MEMORY and "0:125" in rows["39"].reason
    assert rows["40"].state is JobState.CANCELLED and rows["40"].native == "CANCELLED by 0"
    assert rows["41"].state is JobState.TIMEOUT
    assert rows["14_5"].state is JobState.PENDING and rows["14_5"].reason == "JobArrayTaskLimit"
    assert rows["63_1"].state is JobState.FAILED and rows["63_1"].reason == "exit code 3:0"


def test_every_slurm_state_is_mapped() -> None:
    """Slurm's job states (squeue/sacct spellings) all map to a JobState, with 'by N' suffixes."""
    names = [
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE", "FAILED",
        "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING", "RESV_DEL_HOLD", "REQUEUE_FED",
        "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED", "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT",
        "STOPPED", "SUSPENDED", "TIMEOUT",
    ]
    for name in names:
        assert q.to_state(name) is not JobState.UNKNOWN, name
    assert q.to_state("CANCELLED by 1234") is JobState.CANCELLED


def test_transient_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """'Socket timed out' is retried with backoff; a real error is raised at once with its text."""
    answers = [(1, "squeue: error: Socket timed out on send/recv operation")] * 2 + [(0, "")]
    seen: list[str] = []

    def fake(cmd: Any) -> subprocess.CompletedProcess[str]:
        seen.append(cmd[0])
        code, err = answers.pop(0) if answers else (1, "sbatch: error: invalid partition specified: x")
        return subprocess.CompletedProcess(cmd, code, "", err)

    monkeypatch.setattr(q, "_exec", fake)
    monkeypatch.setattr(q, "BACKOFF_S", 0.001)
    assert q.run(["squeue"]).returncode == 0 and seen == ["squeue"] * 3
    with pytest.raises(jobsub.SubmissionError, match="invalid partition specified: x"):
        q.run(["sbatch"], error=jobsub.SubmissionError)
    assert seen[-1] == "sbatch" and len(seen) == 4


def test_how_a_missing_or_failed_job_is_read(tmp_path: Path) -> None:
    """FAILED waits for sacct (srun OOM hides there); vanished array tasks were cancelled; else LOST."""
    backend = SlurmBackend(str(tmp_path))
    failed, known = q.Row("FAILED", "NonZeroExitCode"), {"50", "60"}
    assert backend._combine("50", failed, {}, 1000.0, known).state is JobState.RUNNING  # sacct lags
    assert backend._combine("50", failed, {}, 1000.0 + slurm_module.SACCT_LAG_S, known).state is JobState.FAILED
    assert backend._combine("50", failed, None, 1000.0, known).state is JobState.FAILED  # no accounting
    assert backend._combine("60_3", None, {}, 1000.0, known).state is JobState.CANCELLED
    assert backend._combine("70", None, {}, 1000.0, known).state is JobState.UNKNOWN  # just submitted?
    assert backend._combine("70", None, {}, 1000.0 + slurm_module.LOST_GRACE_S, known).state is JobState.LOST


def test_memory_kill_without_cgroups_is_out_of_memory(tmp_path: Path) -> None:
    """Where Slurm polls RSS instead of using cgroups, an over-memory job says FAILED; its log says OOM."""
    (tmp_path / ".ids").mkdir()
    (tmp_path / ".ids" / "80").write_text("KEY")
    (tmp_path / "KEY" / "slurm").mkdir(parents=True)
    (tmp_path / "KEY" / "slurm" / "80_1.out").write_text("slurmstepd: error: Exceeded job memory limit\n")
    backend = SlurmBackend(str(tmp_path))
    status = backend._combine("80_1", None, {"80_1": q.Row("FAILED", "exit code 0:9")}, 0.0, {"80"})
    assert status.state is JobState.OUT_OF_MEMORY and "0:9" in status.reason
    assert backend._combine("80_2", None, {"80_2": q.Row("FAILED")}, 0.0, {"80"}).state is JobState.FAILED


# -- the cluster: parameters and submission ----------------------------------------------
def test_autoexecutor_picks_slurm(cluster: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With sbatch on PATH, AutoExecutor.which() says slurm."""
    monkeypatch.delenv("JOBSUB_CLUSTER", raising=False)
    assert jobsub.AutoExecutor.which() == "slurm"


def test_submitit_parameter_spellings(cluster: None, tmp_path: Path) -> None:
    """AutoExecutor's slurm_* keys and SlurmExecutor's native keys reach the script; None unsets."""
    auto = jobsub.AutoExecutor(tmp_path, cluster="slurm", slurm_max_num_timeout=3)
    auto.update_parameters(
        slurm_partition="debug", slurm_mem_per_cpu="1G", slurm_gpus_per_task=1, slurm_signal_delay_s=30,
        slurm_comment="x", slurm_additional_parameters={"hint": "compute_bound"}, slurm_setup=["echo hi"],
        slurm_srun_args=["-v"], slurm_time=3, slurm_exclusive=None, mem_gb=8,
    )
    params = auto._resolve()
    assert params.common.max_num_timeout == 3 and params.common.timeout_min == 3
    text = _script(tmp_path, 1, params, array=False)
    for line in ("--partition=debug", "--mem-per-cpu=1G", "--gpus-per-task=1", "--signal=B:USR2@30",
                 "--comment=x", "--hint=compute_bound", "--time=3"):
        assert f"#SBATCH {line}\n" in text
    assert "--mem=" not in text and "echo hi" in text  # --mem and --mem-per-cpu exclude each other
    native = jobsub.SlurmExecutor(tmp_path, max_num_timeout=2)
    native.update_parameters(partition="debug", time=5, mem="1G", job_name="n", ntasks_per_node=2)
    text = _script(tmp_path, 1, native._resolve(), array=False)
    for line in ("--partition=debug", "--time=5", "--mem=1G", "--job-name=n", "--ntasks-per-node=2"):
        assert f"#SBATCH {line}\n" in text
    assert "srun --unbuffered" in text
    native.update_parameters(partition=None)
    assert "partition" not in native.parameters


def test_sbatch_errors_carry_its_message(ex: jobsub.AutoExecutor) -> None:
    """Refused submissions raise SubmissionError with sbatch's words, and leave no folder behind."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"slurm_partition": "nosuch"}, "invalid partition specified: nosuch"),
        ({"slurm_partition": "short", "timeout_min": 10}, "Requested time limit is invalid"),
        ({"slurm_partition": None, "timeout_min": None, "mem_gb": 100}, "Memory specification can not be satisfied"),
    ]
    for keys, message in cases:
        ex.update_parameters(**keys)
        with pytest.raises(jobsub.SubmissionError, match=message):
            ex.submit(tasks.add, 1, 2)
    assert not [p for p in ex.folder.iterdir() if not p.name.startswith(".")]


def test_weird_folder_on_the_cluster(cluster: None, weird_tmp_path: Path) -> None:
    """A job folder whose path has quotes, spaces and a shell command in it works end to end."""
    executor = jobsub.AutoExecutor(weird_tmp_path / "runs", cluster="slurm", **SMALL)
    job = executor.submit(tasks.print_and_return, "odd")
    assert job.result(timeout=60) == "odd" and "odd" in (job.stdout() or "")


def test_array_parallelism_throttles(ex: jobsub.AutoExecutor) -> None:
    """array_parallelism=2: never more than 2 tasks of the array run at once."""
    ex.update_parameters(array_parallelism=2)
    jobs = ex.map_array(tasks.sleep_then, [1.5] * 6, range(6))
    assert [j.result(timeout=120) for j in jobs] == list(range(6))
    spans = [(u["start"], u["end"]) for j in jobs for u in j.usage]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most <= 2, spans
    assert "#SBATCH --array=0-5%2" in (jobs[0].paths.folder / "slurm" / "0.sh").read_text()


def test_multi_task_job_runs_every_rank_under_srun(ex: jobsub.AutoExecutor) -> None:
    """tasks_per_node=3: three ranks under srun, each with its own result and Slurm rank variables."""
    ex.update_parameters(tasks_per_node=3)
    job = ex.submit(tasks.getenv, "SLURM_PROCID")
    assert sorted(str(r) for r in job.results(timeout=60)) == ["0", "1", "2"]
    assert [job.task(r).result() for r in range(3)] == ["0", "1", "2"]


def test_array_larger_than_max_array_size_is_split(ex: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cap of 3, a 7-item map_array is 3 sbatch arrays whose tasks keep their global index."""
    monkeypatch.setattr(ex.backend, "max_array_size", lambda params: 3)
    jobs = ex.map_array(tasks.add, range(7), [100] * 7)
    assert [j.result(timeout=60) for j in jobs] == [100 + i for i in range(7)]
    bases = [j.job_id.split("_")[0] for j in jobs]
    assert len(set(bases)) == 3 and [j.job_id.split("_")[1] for j in jobs] == ["0", "1", "2", "0", "1", "2", "0"]
    assert sorted(p.name for p in (jobs[0].paths.folder / "slurm").glob("*.sh")) == ["0.sh", "3.sh", "6.sh"]


def test_max_array_size_is_read_from_the_cluster(ex: jobsub.AutoExecutor) -> None:
    """The cap is scontrol's MaxArraySize (1001 here)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    expected = int(next(line for line in out.splitlines() if line.startswith("MaxArraySize")).split("=")[1])
    assert ex.backend.max_array_size(ex._resolve()) == expected


# -- the cluster: how jobs end ------------------------------------------------------------
def test_failure_has_remote_traceback_and_slurm_state(ex: jobsub.AutoExecutor) -> None:
    """A raising function: FailedJobError with the remote traceback; Slurm says FAILED."""
    job = ex.submit(tasks.fail, "bad 7")
    with pytest.raises(jobsub.FailedJobError, match="ValueError: bad 7") as info:
        job.result(timeout=60)
    assert "in fail" in str(info.value)
    # the result file can be read before Slurm sees the job end: status() then tells FAILED from the
    # result, without Slurm's words, until sacct has them
    deadline = time.monotonic() + 30
    while "exit code" not in job.status(force=True).reason and time.monotonic() < deadline:
        time.sleep(0.5)
    status = job.status()
    assert status.state is JobState.FAILED and "exit code 1:0" in status.reason


def test_scancel_is_cancelled(ex: jobsub.AutoExecutor) -> None:
    """Cancelling an array task: JobCancelledError with Slurm's 'CANCELLED by' reason; others run on."""
    jobs = ex.map_array(tasks.sleep_then, [60, 0], ["never", "ok"])
    assert jobs[0].cancel()
    with pytest.raises(jobsub.JobCancelledError) as info:
        jobs[0].result(timeout=60)
    assert info.value.state is JobState.CANCELLED and "cancelled" in info.value.reason.lower()
    assert jobs[1].result(timeout=60) == "ok"


def test_out_of_memory(ex: jobsub.AutoExecutor) -> None:
    """Over --mem, run directly or under srun: OutOfMemoryError, state OUT_OF_MEMORY, slurmstepd's words."""
    ex.update_parameters(mem_gb=0.1)
    direct = ex.submit(hog, 600)
    ex.update_parameters(tasks_per_node=2)
    under_srun = ex.submit(hog, 600)
    for job in (direct, under_srun):
        with pytest.raises(jobsub.OutOfMemoryError) as info:
            job.result(timeout=90)
        assert info.value.state is JobState.OUT_OF_MEMORY and job.state == "OUT_OF_MEMORY"
        assert "oom-kill" in str(info.value)  # the stderr tail ends with Slurm's own output


def test_dependency_chain(ex: jobsub.AutoExecutor) -> None:
    """Jobs passed as arguments become afterok dependencies; a failed one cancels, never hangs."""
    first = ex.submit(tasks.add, 1, 2)
    second = ex.submit(tasks.add, first, 10)
    third = ex.submit(tasks.add, second, 100)
    broken = ex.submit(tasks.fail, "upstream")
    orphan = ex.submit(tasks.add, broken, 1)
    assert third.result(timeout=90) == 113
    assert f"--dependency=afterok:{second.job_id}" in (third.paths.folder / "slurm" / "0.sh").read_text()
    start = time.monotonic()
    with pytest.raises(jobsub.JobCancelledError, match="dependency failed") as info:
        orphan.result(timeout=60)
    assert broken.job_id in info.value.reason and time.monotonic() - start < 30


def test_reattach_from_a_new_process(ex: jobsub.AutoExecutor) -> None:
    """Another process re-binds to the jobs through the folder and gets their results."""
    jobs = ex.map_array(tasks.sleep_then, [1, 1], ["a", "b"])
    script = "import sys, jobsub; print([j.result(timeout=60) for j in jobsub.Job.attach(sys.argv[1])])"
    out = subprocess.run(
        [sys.executable, "-c", script, str(jobs[0].paths.folder)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "['a', 'b']"


# -- the cluster: gentle polling ------------------------------------------------------------
def test_polling_1000_jobs_is_one_squeue_and_one_sacct(ex: jobsub.AutoExecutor, calls: list[list[str]]) -> None:
    """1,000 tracked array tasks (held, so they stay pending) cost one squeue per poll.

    sacct is asked only about jobs squeue no longer shows (or shows FAILED); here squeue knows
    them all, so the poll is that single squeue call.
    """
    ex.update_parameters(slurm_additional_parameters={"hold": True})
    jobs = ex.map_array(tasks.add, range(1000), range(1000))
    try:
        calls.clear()
        poller = poller_for(ex.backend)
        assert poller.status(jobs[0].job_id, force=True).state is JobState.PENDING
        assert _names(calls) == ["squeue"]
        assert all(poller.cached(j.job_id) for j in jobs)  # every id was answered by that one poll
        assert jobs[999].state == "PENDING" and len(calls) == 1  # within the interval: no new call
    finally:
        ex.backend.cancel([jobs[0].job_id.split("_")[0]])


def test_processes_share_one_poll(ex: jobsub.AutoExecutor, calls: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends (or processes) watching one folder reuse the newest answer of the state cache file."""
    monkeypatch.setenv("JOBSUB_POLL_INTERVAL", "30")
    first, second = ex.submit(tasks.sleep_then, 30), ex.submit(tasks.sleep_then, 30)
    try:
        a, b = SlurmBackend(str(ex.folder)), SlurmBackend(str(ex.folder))
        calls.clear()
        answer = a.states([first.job_id])
        assert _names(calls) == ["squeue"]  # both still queued: sacct has nothing to add
        assert b.states([first.job_id]) == answer and len(calls) == 1  # served by the file
        b.states([second.job_id])  # asks, and includes what a watches
        assert len(calls) == 2 and a.states([first.job_id, second.job_id]) and len(calls) == 2
        script = textwrap.dedent(
            """
            import sys
            from jobsub.backends.slurm import query as q
            from jobsub.backends.slurm import SlurmBackend
            real, seen = q._exec, []
            q._exec = lambda cmd: seen.append(cmd[0]) or real(cmd)
            print(SlurmBackend(sys.argv[1]).states(sys.argv[2:])[sys.argv[2]].state.value, len(seen))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", script, str(ex.folder), first.job_id], capture_output=True, text=True, check=True
        )
        assert out.stdout.split()[1] == "0", out.stdout  # the other process asked Slurm nothing
    finally:
        ex.backend.cancel([first.job_id, second.job_id])


def test_retried_sbatch_never_submits_twice(ex: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """sbatch submits but answers 'Socket timed out': the retry finds the job in squeue instead."""
    real = q._exec
    sbatch_runs: list[str] = []
    mode = {"lost_answer": True}

    def flaky(cmd: Any) -> subprocess.CompletedProcess[str]:
        if cmd[0] != "sbatch":
            return real(cmd)
        if mode["lost_answer"] and not sbatch_runs:
            sbatch_runs.append(real(cmd).stdout.strip())  # the job IS submitted ...
            return subprocess.CompletedProcess(cmd, 1, "", "sbatch: error: Socket timed out on send/recv operation")
        if not mode["lost_answer"] and not sbatch_runs:
            sbatch_runs.append("refused")  # ... or the controller really did not take it
            return subprocess.CompletedProcess(cmd, 1, "", "sbatch: error: Unable to contact slurm controller")
        proc = real(cmd)
        sbatch_runs.append(proc.stdout.strip())
        return proc

    monkeypatch.setattr(q, "_exec", flaky)
    monkeypatch.setattr(q, "BACKOFF_S", 0.01)
    job = ex.submit(tasks.add, 2, 2)
    assert sbatch_runs == [job.job_id]  # one sbatch call, its id recovered from squeue
    script = str(job.paths.folder / "slurm" / "0.sh")
    listed = subprocess.run(["squeue", "--me", "-h", "-t", "all", "-o", "%i %o"], capture_output=True, text=True).stdout
    assert [line for line in listed.splitlines() if line.endswith(script)] == [f"{job.job_id} {script}"]
    assert job.result(timeout=60) == 4
    mode["lost_answer"], sbatch_runs[:] = False, []
    again = ex.submit(tasks.add, 3, 3)
    assert sbatch_runs == ["refused", again.job_id] and again.result(timeout=60) == 6


def test_without_accounting_squeue_is_enough(ex: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """sacct answering 'accounting storage is disabled': states come from squeue; unknown ids end LOST."""
    real = q._exec

    def no_sacct(cmd: Any) -> subprocess.CompletedProcess[str]:
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 1, "", "sacct: error: Slurm accounting storage is disabled")
        return real(cmd)

    monkeypatch.setattr(q, "_exec", no_sacct)
    monkeypatch.setattr(slurm_module, "LOST_GRACE_S", 0.0)
    done, cancelled = ex.submit(tasks.add, 1, 1), ex.submit(tasks.sleep_then, 60)
    assert done.result(timeout=60) == 2
    cancelled.cancel()
    with pytest.raises(jobsub.JobCancelledError):
        cancelled.result(timeout=60)
    unknown = str(random.randrange(900_000_000, 999_999_999))  # never cached by an earlier run
    status = ex.backend.states([unknown])[unknown]
    assert isinstance(ex.backend, SlurmBackend) and ex.backend._sacct_disabled
    assert status.state is JobState.LOST and "accounting" in status.reason


# -- the slow jobs (submitted when the module started) --------------------------------------
def test_timeout_and_checkpoint(slow_jobs: dict[str, jobsub.Job[Any]] | None) -> None:
    """Over its 1 min limit a job raises JobTimeoutError; a Checkpointable one is requeued and finishes."""
    slurm_env.require()
    assert slow_jobs is not None
    checkpointed = slow_jobs["checkpoint"]
    assert checkpointed.result(timeout=150) == 2  # second attempt: restarted from its checkpoint
    submitted = json.loads(checkpointed.paths.submission_file.read_text())["submitted_at"]
    # the poll released the requeued job: Slurm alone would hold it 120 s after the requeue
    assert checkpointed.usage[0]["start"] - submitted < 100
    # the worker checkpointed and asked Slurm for the requeue (it leaves at once, before Slurm would
    # kill it: Slurm's own "DUE TO JOB REQUEUE" line is then not always written)
    assert "checkpoint written for task 0; requeueing" in (checkpointed.stderr() or "")
    timed_out = slow_jobs["timeout"]
    with pytest.raises(jobsub.JobTimeoutError) as info:
        timed_out.result(timeout=150)
    assert info.value.state is JobState.TIMEOUT and timed_out.state == "TIMEOUT"
    assert "DUE TO TIME LIMIT" in str(info.value)


def _drained(text: str) -> bool:
    """Slurm's words for a job waiting on a drained node (22.05 says the first, then the second)."""
    return "ReqNodeNotAvail" in text or "DOWN, DRAINED" in text


def test_a_job_that_cannot_start_says_why(
    ex: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With the node drained, the job pends for Slurm's reason (squeue's %r): ``job.status()`` and
    ``jobsub status`` show it, and a wait that pends for it longer than JOBSUB_PENDING_WARN_S logs a
    warning naming it (and goes on: nothing is cancelled).  Real: this cluster's only node, drained
    for a few seconds and resumed in ``finally``."""
    node = subprocess.run(["sinfo", "-h", "-o", "%N"], capture_output=True, text=True, check=True).stdout.split()[0]
    monkeypatch.setenv("JOBSUB_PENDING_WARN_S", "0.5")
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=jobsub test"], check=True)
    try:
        job = ex.submit(tasks.add, 1, 2)
        with caplog.at_level(logging.WARNING, logger="jobsub"), pytest.raises(TimeoutError):
            job.wait(timeout=6)
        reason = job.status(force=True).reason
        assert job.state is JobState.PENDING and _drained(reason), reason
        warned = [r.getMessage() for r in caplog.records if "has been pending" in r.getMessage()]
        assert len(warned) == 1 and _drained(warned[0]), warned
        status = subprocess.run(
            [sys.executable, "-m", "jobsub.cli", "status", str(ex.folder)], capture_output=True, text=True, check=False
        )
        assert "PENDING" in status.stdout and _drained(status.stdout), status.stdout
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    assert job.result(timeout=120) == 3 and not job.status().reason


def test_a_job_waiting_its_turn_is_no_warning(
    ex: jobsub.AutoExecutor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pending on its upstream (Slurm's ``Dependency``) is usual: a long wait for it warns of nothing."""
    monkeypatch.setenv("JOBSUB_PENDING_WARN_S", "0.5")
    first = ex.submit(tasks.sleep_then, 3, 1)
    second = ex.submit(tasks.add, first, 1)
    with caplog.at_level(logging.WARNING, logger="jobsub"):
        assert second.result(timeout=120) == 2
    assert not [r for r in caplog.records if "has been pending" in r.getMessage()]
