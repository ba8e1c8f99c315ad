"""How jobs look to a person: tables for a terminal, colour only where it belongs, HTML for notebooks.

Colour is used only when the stream is a terminal and ``NO_COLOR`` is unset
(https://no-color.org), so pipes, files and CI logs get plain text.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from .report import SubmissionReport
from .report import report as summarize
from .states import JobState

if TYPE_CHECKING:
    from .job import Job

__all__ = ["colour_enabled", "duration", "executor_html", "job_html", "paint", "reports_html", "status_table"]

_COLOURS = {
    JobState.COMPLETED: "32",  # green
    JobState.RUNNING: "36",  # cyan
    JobState.PENDING: "33",  # yellow
    JobState.HELD: "33",
    JobState.REQUEUED: "33",
    JobState.CANCELLED: "35",  # magenta
    JobState.UNKNOWN: "2",  # dim
}
_BAD = "31"  # red: every other final state

HEADER = ("SUBMISSION", "FUNCTION", "BACKEND", "IDS", "STATES", "AGE", "DURATION", "PEAK MEM", "WHY WAITING")


def colour_enabled(stream: IO[str]) -> bool:
    """Colour for ``stream``: a terminal, ``NO_COLOR`` unset, ``TERM`` not ``dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, state: str, colour: bool) -> str:
    """``text`` in the colour of ``state`` (when ``colour``)."""
    if not colour:
        return text
    try:
        code = _COLOURS.get(JobState(state), _BAD)
    except ValueError:
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def duration(seconds: float | None) -> str:
    """``850ms``, ``42s``, ``3m05s``, ``2h10m``, ``3d4h``: short, and no wider than it needs."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def _memory(mb: float | None) -> str:
    if not mb:
        return "-"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _states(report: SubmissionReport, colour: bool) -> str:
    return " ".join(paint(f"{n} {state}", state, colour) for state, n in report.states.items())


def _row(report: SubmissionReport, colour: bool, now: float) -> tuple[str, ...]:
    age = duration(now - report.submitted_at) if report.submitted_at else "-"
    return (
        report.name, report.function or "-", report.backend or "-", report.ids or "-", _states(report, colour),
        age, duration(report.duration_s), _memory(report.peak_rss_mb), report.reason or "",
    )


def _visible_len(text: str) -> int:
    """Width on screen: colour codes take none."""
    width, inside = 0, False
    for char in text:
        if char == "\x1b":
            inside = True
        elif inside and char == "m":
            inside = False
        elif not inside:
            width += 1
    return width


def status_table(reports: Sequence[SubmissionReport], colour: bool = False, now: float | None = None) -> str:
    """The table of ``jobsub status``: a header, one row per submission, its failures under it.

    Column widths come from the widest cell, so long array ranges never push
    the next columns out of line; an unreadable submission gets a line saying why.
    """
    now = time.time() if now is None else now
    rows = [HEADER] + [_row(r, colour, now) for r in reports if not r.problem]
    widths = [max(_visible_len(row[c]) for row in rows) for c in range(len(HEADER))]
    lines = []
    readable = iter(rows[1:])
    for i, report in enumerate([None, *reports]):
        if report is not None and report.problem:
            lines.append(f"{report.name}  ({report.problem})")
            continue
        row = HEADER if i == 0 else next(readable)
        cells = [cell + " " * (width - _visible_len(cell)) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if report is None:
            continue
        for failure in report.failures:
            lines.append(f"  task {failure.index} ({failure.job_id}) {paint(failure.state, failure.state, colour)}: "
                         f"{failure.error}")
        if report.failed > len(report.failures):
            lines.append(f"  ... and {report.failed - len(report.failures)} more failed task(s)")
    return "\n".join(lines)


def reports_html(reports: Sequence[SubmissionReport], now: float | None = None) -> str:
    """The same table for a notebook (``_repr_html_``), failures as rows under their submission."""
    now = time.time() if now is None else now
    cell = "padding:2px 8px;text-align:left"
    out = ['<table style="border-collapse:collapse">', "<tr>"]
    out += [f'<th style="{cell}">{html.escape(h.title())}</th>' for h in HEADER]
    out.append("</tr>")
    for report in reports:
        if report.problem:
            out.append(f'<tr><td style="{cell}" colspan="{len(HEADER)}">{html.escape(report.name)}: '
                       f"{html.escape(report.problem)}</td></tr>")
            continue
        row = list(_row(report, False, now))
        row[4] = " ".join(
            f'<span style="color:{_html_colour(state)}">{n} {html.escape(state)}</span>'
            for state, n in report.states.items()
        )
        out.append("<tr>" + "".join(
            f'<td style="{cell}">{value if c == 4 else html.escape(value)}</td>' for c, value in enumerate(row)
        ) + "</tr>")
        for failure in report.failures:
            out.append(
                f'<tr><td></td><td style="{cell}" colspan="{len(HEADER) - 1}">task {failure.index} '
                f"(<code>{html.escape(failure.job_id)}</code>) "
                f'<span style="color:{_html_colour(failure.state)}">{html.escape(failure.state)}</span>: '
                f"<code>{html.escape(failure.error)}</code>{_log_link(failure.log)}</td></tr>"
            )
        if report.failed > len(report.failures):
            out.append(f'<tr><td></td><td style="{cell}" colspan="{len(HEADER) - 1}">... and '
                       f"{report.failed - len(report.failures)} more failed task(s)</td></tr>")
    out.append("</table>")
    return "".join(out)


def _html_colour(state: str) -> str:
    code = _COLOURS.get(JobState(state), _BAD) if state in JobState.__members__ else "2"
    return {"32": "green", "36": "teal", "33": "darkorange", "35": "purple", "2": "gray"}.get(code, "crimson")


def _log_link(path: str) -> str:
    if not path:
        return ""
    return f' (<a href="file://{html.escape(path)}" title="{html.escape(path)}">stderr</a>)'


def job_html(job: Job[Any]) -> str:
    """One job in a notebook: its summary row (state, times, memory) and, if it failed, its error line."""
    return reports_html([summarize([job], name=job.job_id)])


def executor_html(kind: str, backend: str, folder: str, parameters: dict[str, Any]) -> str:
    """An executor in a notebook: backend, folder and the parameters set so far."""
    cell = "padding:2px 8px;text-align:left"
    rows = [("backend", backend), ("folder", folder)]
    rows += [(key, repr(value)) for key, value in sorted(parameters.items())]
    body = "".join(
        f'<tr><th style="{cell}">{html.escape(k)}</th><td style="{cell}"><code>{html.escape(v)}</code></td></tr>'
        for k, v in rows
    )
    return f"<b>{html.escape(kind)}</b><table>{body}</table>"
