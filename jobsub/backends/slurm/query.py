"""Talking to Slurm's commands: one runner with retries, and parsers of squeue and sacct.

Every command goes through ``run``: transient controller errors ("Socket
timed out", "Unable to contact slurm controller", submit limits...) are
retried by the core's ``jobsub.retry`` (exponential backoff with jitter),
anything else becomes a jobsub error carrying the command's own message.  Native state names are mapped to
``JobState`` in ``STATES`` and nowhere else.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ...errors import BackendError, JobsubError
from ...retry import retry, slurm_transient
from ...states import JobState

__all__ = ["STATES", "Row", "expand_ids", "parse_sacct", "parse_squeue", "run", "to_state"]

logger = logging.getLogger("jobsub.slurm")

COMMAND_TIMEOUT_S = 180.0
RETRIES = 5
BACKOFF_S = 1.0
"""First wait before a retry; about doubled each time, up to 16 s."""

STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,  # nodes are being booted: the job has not started
    "RESV_DEL_HOLD": JobState.PENDING,
    "REQUEUED": JobState.REQUEUED,
    "REQUEUE_FED": JobState.REQUEUED,
    "REQUEUE_HOLD": JobState.REQUEUED,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,  # processes still ending: the result may not be final yet
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "LAUNCH_FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,  # federation: another cluster runs it
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
}


def to_state(native: str) -> JobState:
    """``"CANCELLED by 0"`` -> CANCELLED; an unknown name -> UNKNOWN (logged)."""
    name = native.split(" ", 1)[0].rstrip("+")
    state = STATES.get(name)
    if state is None:
        logger.warning("unknown Slurm state %r: reported as UNKNOWN", native)
        return JobState.UNKNOWN
    return state


def _exec(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run one command (tests replace this to count calls or to inject failures)."""
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


class _CommandFailed(Exception):
    """A Slurm command failed; its text decides whether it is worth another try."""


def _transient(exc: BaseException) -> float | None:
    return slurm_transient(exc) if isinstance(exc, _CommandFailed) else None


def run(
    cmd: Sequence[str],
    *,
    retries: int = RETRIES,
    error: type[JobsubError] = BackendError,
    accept: Callable[[subprocess.CompletedProcess[str]], bool] | None = None,
    before_retry: Callable[[], str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; retry transient controller errors; raise ``error`` otherwise.

    Args:
        cmd: the command line.
        retries: how many times a transient failure is retried (with backoff).
        error: the jobsub error raised on failure (SubmissionError for sbatch).
        accept: says whether a non-zero exit is an answer after all (squeue's
            "Invalid job id specified" when every id is unknown).
        before_retry: called before each retry; a non-None value ends the retries
            and becomes the returned stdout (sbatch: the job the failed call did submit).
    """
    attempts = 0

    def once() -> subprocess.CompletedProcess[str]:
        nonlocal attempts
        attempts += 1
        try:
            proc = _exec(cmd)
        except FileNotFoundError as exc:
            raise error(f"{cmd[0]} is not installed or not on PATH (is this a Slurm node?)") from exc
        except subprocess.TimeoutExpired:
            raise _CommandFailed(f"timed out after {COMMAND_TIMEOUT_S:g} s") from None
        if proc.returncode == 0 or (accept is not None and accept(proc)):
            return proc
        raise _CommandFailed(proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}")

    def found() -> subprocess.CompletedProcess[str] | None:
        job_id = before_retry() if before_retry is not None else None
        return None if job_id is None else subprocess.CompletedProcess(list(cmd), 0, job_id, "")

    try:
        return retry(
            once, what=cmd[0], classify=_transient, attempts=retries + 1, first_delay_s=BACKOFF_S,
            max_delay_s=16 * BACKOFF_S, before_retry=found,
        )
    except _CommandFailed as exc:
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        raise error(f"`{_short(cmd)}` failed{tries}: {exc}") from None


def _short(cmd: Sequence[str], limit: int = 200) -> str:
    text = shlex.join(cmd)
    return text if len(text) <= limit else text[:limit] + " ..."


_ARRAY = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")


def expand_ids(job_id: str) -> list[str]:
    """``"14_[4-6%2]"`` -> ``["14_4", "14_5", "14_6"]``; ``"123_[1,3-4]"`` -> 1, 3, 4; others as is."""
    match = _ARRAY.match(job_id)
    if match is None:
        return [job_id]
    base, spec = match.groups()
    ids = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        ids += [f"{base}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


@dataclass(frozen=True)
class Row:
    """What one command says about one job or array task."""

    native: str
    """Slurm's own state text (``"CANCELLED by 0"``)."""
    reason: str = ""
    restarts: int = 0
    dependency: str = ""

    @property
    def state(self) -> JobState:
        return to_state(self.native)


SQUEUE_FORMAT = "JobArrayID:0|,State:0|,Reason:0|,RestartCnt:0|,Dependency:0"


def parse_squeue(text: str) -> dict[str, Row]:
    """Parse ``squeue -h -r -O SQUEUE_FORMAT`` (one line per job or array task)."""
    rows = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 5 or not fields[0]:
            continue
        job_id, native, reason, restarts, dependency = fields[:5]
        reason = "" if reason in ("None", "(null)") else reason
        dependency = "" if dependency == "(null)" else dependency
        for one in expand_ids(job_id):
            rows[one] = Row(native, reason, int(restarts) if restarts.isdigit() else 0, dependency)
    return rows


SACCT_FIELDS = "JobID,State,ExitCode,DerivedExitCode,Reason"

# how bad a step state is: a job FAILED at the top may hide an OUT_OF_MEMORY step under srun
_SEVERITY = {"OUT_OF_MEMORY": 3, "NODE_FAIL": 2, "TIMEOUT": 1}


def parse_sacct(text: str) -> dict[str, Row]:
    """Parse ``sacct -P -n -o SACCT_FIELDS``: one Row per job/task, its worst step folded in."""
    jobs: dict[str, list[str]] = {}
    worst_step: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 or not fields[0]:
            continue
        job_id, native, exit_code, derived, reason = (f.strip() for f in fields[:5])
        owner, dot, _step = job_id.partition(".")
        if dot:
            name = native.split(" ", 1)[0]
            if _SEVERITY.get(name, 0) > _SEVERITY.get(worst_step.get(owner, ""), 0):
                worst_step[owner] = name
            continue
        for one in expand_ids(job_id):
            jobs[one] = [native, exit_code, derived, reason]
    rows = {}
    for job_id, (native, exit_code, derived, reason) in jobs.items():
        step = worst_step.get(job_id)
        if step and native.split(" ", 1)[0] in ("FAILED", "COMPLETED"):
            native = step  # e.g. FAILED 1:0 with DerivedExitCode 0:125: a step ran out of memory
        details = [f"exit code {code}" for code in dict.fromkeys((exit_code, derived)) if code not in ("", "0:0")]
        if reason not in ("", "None"):
            details.append(reason)
        rows[job_id] = Row(native, ", ".join(details))
    return rows


def base_ids(backend_ids: Iterable[str]) -> list[str]:
    """The job ids to ask for: array tasks are asked through their array."""
    return sorted({i.split("_", 1)[0] for i in backend_ids}, key=lambda i: (len(i), i))
