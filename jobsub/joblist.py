"""``JobList``: the list ``map_array`` returns, readable in a terminal and a notebook.

A ``list`` subclass, so submitit code (``jobs[0]``, ``len(jobs)``, ``for job in
jobs``, ``jobs == [...]``, pickling) is unchanged; only how it shows differs:
twenty ``Job<...>`` lines become one line of counts by state, and a notebook
draws the summary table of ``jobsub status``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .job import Job

__all__ = ["JobList", "as_plain", "rebuild"]

R = TypeVar("R")


class JobList(list[Job[R]]):
    """The jobs of one submission (or any jobs), shown as a summary."""

    def __repr__(self) -> str:
        if not self:
            return "JobList([])"
        from collections import Counter

        states = Counter(str(job.state) for job in self)  # one backend call: the handles share a poller
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        backends = ", ".join(sorted({job.backend for job in self}))
        return f"JobList<{len(self)} job(s) on {backends}: {counts}>"

    def _repr_html_(self) -> str:
        from .display import reports_html
        from .report import report

        return reports_html([report(self)]) if self else "<code>JobList([])</code>"

    def __reduce__(self) -> tuple[Any, ...]:  # unpickles as a plain list where jobsub is older
        return (JobList, (list(self),))


def rebuild(value: Any, replace: Callable[[Any], Any]) -> Any:
    """``value`` with ``replace(item)`` put in place of each item, searched in lists, tuples and dicts
    (exactly those types, as the task rebuilds them); a container nothing changed in is kept as it is."""
    new = replace(value)
    if new is not value:
        return new
    if type(value) in (list, tuple):
        items = [rebuild(item, replace) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
    if type(value) is dict:
        values = {key: rebuild(item, replace) for key, item in value.items()}
        return value if all(values[k] is v for k, v in value.items()) else values
    return value


def as_plain(value: Any) -> Any:
    """``value`` with every ``JobList`` in it made a plain ``list``.

    Arguments are searched for jobs, hashed for the cache and rebuilt in the
    task by their exact type (``list``, ``tuple``, ``dict``): a ``JobList``
    passed as an argument is therefore given to them as the list it is.
    """
    return rebuild(value, lambda item: [as_plain(x) for x in item] if isinstance(item, JobList) else item)
