"""``jobsub.summary(jobs)``: the picture after a sweep, each task's time queued and running, by state.

::

    jobs = ex.map_array(train, configs)
    jobsub.wait(jobs)
    jobsub.summary(jobs)            # in a notebook: the plot; elsewhere .savefig("sweep.png")

One horizontal line per task: thin from its submission to its start (queued),
thick from its start to its end (running), coloured by the state it ended in.
The times are those the worker recorded (``job.usage``); a task still waiting
runs up to now.  matplotlib draws it (``pip install matplotlib``), imported
only here, without pyplot: nothing opens a window.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

from .errors import JobsubError
from .job import Job
from .states import JobState

__all__ = ["TaskSpan", "summary", "timeline"]

_COLOURS = {
    "COMPLETED": "tab:green", "RUNNING": "tab:blue", "PENDING": "tab:gray", "HELD": "tab:olive",
    "CANCELLED": "tab:purple", "TIMEOUT": "tab:orange", "OUT_OF_MEMORY": "tab:brown",
}


@dataclasses.dataclass(frozen=True)
class TaskSpan:
    """One task on the timeline (seconds since the first submission)."""

    job_id: str
    state: str
    submitted: float
    started: float | None
    ended: float | None


def timeline(jobs: Sequence[Job[Any]], now: float | None = None) -> list[TaskSpan]:
    """Each job's queued and running spans, in seconds since the earliest submission."""
    return _timeline(jobs, time.time() if now is None else now)[0]


def _timeline(jobs: Sequence[Job[Any]], now: float) -> tuple[list[TaskSpan], float]:
    rows: list[tuple[Job[Any], JobState, float, float | None, float | None]] = []
    for job in jobs:
        state = job.state
        try:
            submitted = float(job.folder.read_meta().get("submitted_at") or now)
            usage = job.usage if state.is_final else []
        except (JobsubError, OSError, TypeError):
            submitted, usage = now, []
        starts = [u["start"] for u in usage if "start" in u]
        ends = [u["end"] for u in usage if "end" in u]
        rows.append((job, state, submitted, min(starts, default=None), max(ends, default=None)))
    origin = min((row[2] for row in rows), default=now)
    spans = []
    for job, state, submitted, started, ended in rows:
        if started is None and state is JobState.RUNNING:
            started = now  # its start is recorded with its end: it runs at least from now on
        spans.append(TaskSpan(
            job.job_id, str(state), submitted - origin,
            None if started is None else started - origin,
            None if ended is None else ended - origin,
        ))
    return spans, origin


def summary(jobs: Sequence[Job[Any]], title: str | None = None) -> Any:
    """A matplotlib ``Figure`` of the tasks' timelines (queued thin, running thick, coloured by state)."""
    try:
        from matplotlib.lines import Line2D
    except ImportError as exc:
        raise ImportError("jobsub.summary draws with matplotlib: pip install matplotlib") from exc
    now = time.time()
    spans, origin = _timeline(jobs, now)
    origin_now = now - origin  # "now" on the plot's axis
    figure = _figure_class()(figsize=(8, max(2.0, 0.25 * len(spans) + 1.2)), layout="constrained")
    ax = figure.add_subplot()
    for row, span in enumerate(spans):
        colour = _COLOURS.get(span.state, "tab:red")
        queued_until = span.started if span.started is not None else max(origin_now, span.submitted)
        ax.hlines(row, span.submitted, queued_until, colors=colour, linewidth=1, alpha=0.5)
        if span.started is not None:
            end = span.ended if span.ended is not None else max(origin_now, span.started)
            ax.hlines(row, span.started, end, colors=colour, linewidth=6)
    ax.set_yticks(range(len(spans)), [s.job_id for s in spans], fontsize=7 if len(spans) > 20 else 9)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first submission")
    counts: dict[str, int] = {}
    for span in spans:
        counts[span.state] = counts.get(span.state, 0) + 1
    handles = [Line2D([], [], color=_COLOURS.get(s, "tab:red"), linewidth=6, label=f"{n} {s}") for s, n in counts.items()]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title(title or f"{len(spans)} task(s)")
    return figure


@functools.cache
def _figure_class() -> type[Any]:
    """A matplotlib ``Figure`` that a notebook draws (a figure made without pyplot has no display of its own)."""
    import io

    from matplotlib.figure import Figure

    class TimelineFigure(Figure):
        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return TimelineFigure
