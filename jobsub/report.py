"""What a submission's jobs amount to: counts by state, times, peak memory, failures and their first error line.

One summary, written once, for every place that shows jobs to a person or a
script: ``jobsub status`` (its table and ``--json``), the notebook views of a
job list and the progress bars.  Everything comes through ``Job``'s public
surface (``state``, ``usage``, ``exception``, ``get_info``), so a summary asks
the backend once for all jobs (their poller is shared) and runs nothing: a
debug job that was never waited for stays PENDING.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import JobsubError
from .states import JobState

if TYPE_CHECKING:
    from .job import Job

__all__ = ["FAILURES_SHOWN", "Failure", "SubmissionReport", "first_error_line", "report"]

FAILURES_SHOWN = 20
"""Failed tasks whose error is read and named; past that, only counted (each read is a file or a request)."""
USAGE_READ_MAX = 100
"""Tasks of a bucket submission whose usage is read for its times and peak memory: each is a
request (10,000 tasks would take minutes); past that, the summary has no times nor peak."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """One task that ended other than COMPLETED."""

    index: int
    job_id: str
    state: str
    error: str
    """The first line of its error: ``ValueError: bad input``, ``ended TIMEOUT (...)``."""
    log: str = ""
    """Its stderr file, on a local disk (``jobsub logs --err`` reads it anywhere)."""


@dataclasses.dataclass
class SubmissionReport:
    """One submission (or any list of jobs), as ``jobsub status`` shows it."""

    name: str
    """Where it is, relative to the folder asked about (or the submission's key)."""
    url: str = ""
    """Its folder (what ``Job.attach`` takes)."""
    function: str = ""
    backend: str = ""
    ids: str = ""
    tasks: int = 0
    states: dict[str, int] = dataclasses.field(default_factory=dict)
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    peak_rss_mb: float | None = None
    failures: list[Failure] = dataclasses.field(default_factory=list)
    failed: int = 0
    """How many tasks ended other than COMPLETED (``failures`` names the first ``FAILURES_SHOWN``)."""
    reason: str = ""
    """Why it waits (the scheduler's pending reason, what a held submission waits for)."""
    problem: str = ""
    """Why it cannot be read (its other fields are then empty)."""

    @property
    def finished(self) -> bool:
        """Every task ended (a damaged submission counts as ended: nothing will change it)."""
        return bool(self.problem) or (self.tasks > 0 and self.done == self.tasks)

    @property
    def done(self) -> int:
        return sum(n for state, n in self.states.items() if JobState(state).is_final)

    @property
    def duration_s(self) -> float | None:
        """From the first task's start to the last one's end (or now, while some run)."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.finished and self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def as_json(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record.update(finished=self.finished, duration_s=self.duration_s)
        return record


def first_error_line(error: BaseException) -> str:
    """What went wrong, in one line: the remote exception (``ValueError: boom``), else the error's first line."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if " failed with " in first:  # FailedJobError: "job 12 (task 0) failed with ValueError: boom"
        return first.split(" failed with ", 1)[1]
    if not isinstance(error, JobsubError):  # the function's own exception (debug backend)
        return f"{type(error).__name__}: {first}" if first else type(error).__name__
    return first or type(error).__name__


def report(jobs: Sequence[Job[Any]], name: str = "", read_usage: bool | None = None) -> SubmissionReport:
    """Summarize ``jobs`` (usually one submission's).  Raises what reading their folder raises.

    ``read_usage``: read each task's usage (start, end, peak memory); by default
    on a local disk, or for at most ``USAGE_READ_MAX`` tasks of a bucket folder.
    """
    if not jobs:
        return SubmissionReport(name=name, problem="not submitted")
    first = jobs[0]
    meta = first.folder.read_meta()
    summary = SubmissionReport(
        name=name or first.folder.key, url=first.folder.url, function=str(meta.get("function", "")), backend=first.backend,
        ids=_ids(jobs), tasks=len(jobs), submitted_at=meta.get("submitted_at"),
    )
    states = [job.state for job in jobs]  # one backend call: the handles share their poller
    summary.states = dict(sorted(collections.Counter(str(s) for s in states).items()))
    waiting = [(job, s) for job, s in zip(jobs, states, strict=True) if s in (JobState.PENDING, JobState.HELD)]
    if waiting:
        summary.reason = waiting[0][0].get_info(mode="cache").get("Reason", "")
    if read_usage is None:
        read_usage = first.folder.local_file() is not None or len(jobs) <= USAGE_READ_MAX
    if read_usage:
        _add_usage(summary, [job for job, s in zip(jobs, states, strict=True) if s.is_final])
    for job, state in zip(jobs, states, strict=True):
        if not state.is_final or state is JobState.COMPLETED:
            continue
        summary.failed += 1
        if len(summary.failures) < FAILURES_SHOWN:
            log = str(job.paths.stderr) if job.folder.local_file() is not None else ""
            summary.failures.append(Failure(job.index, job.job_id, str(state), _error_of(job, state), log))
    return summary


def _ids(jobs: Sequence[Job[Any]]) -> str:
    """``1234`` for one job, ``1234_[0-99]`` for an array, ``a..b`` for anything else."""
    if len(jobs) == 1:
        return jobs[0].job_id
    bases = {job.job_id.rpartition("_")[0] for job in jobs}
    if len(bases) == 1 and "" not in bases:
        return f"{bases.pop()}_[{jobs[0].job_id.rpartition('_')[2]}-{jobs[-1].job_id.rpartition('_')[2]}]"
    return f"{jobs[0].job_id}..{jobs[-1].job_id}"


def _add_usage(summary: SubmissionReport, ended: Sequence[Job[Any]]) -> None:
    starts, ends, peaks = [], [], []
    for job in ended:
        try:
            usage = job.usage
        except (JobsubError, OSError, TypeError):  # a damaged result: its state says why
            continue
        for rank in usage:
            starts += [rank["start"]] if "start" in rank else []
            ends += [rank["end"]] if "end" in rank else []
            peaks += [rank["max_rss_mb"]] if rank.get("max_rss_mb") else []
    summary.started_at = min(starts, default=None)
    summary.ended_at = max(ends, default=None)
    summary.peak_rss_mb = max(peaks, default=None)


def _error_of(job: Job[Any], state: JobState) -> str:
    """The first line of an ended job's error; never waits (the job ended) and never raises."""
    try:
        error = job.exception(timeout=0)
    except TimeoutError:  # the backend saw the end, the result is still on its way
        return job.get_info(mode="cache").get("Reason", "") or str(state)
    except Exception as exc:  # an unreadable result is an error too: say which
        return first_error_line(exc)
    return first_error_line(error) if error is not None else str(state)
