"""The commands of ``jobsub`` that read job folders (status, logs, graph, info) or tidy them (clean).

Each returns the command's exit status (``EXIT_*``) and writes to stdout what
a person or, with ``as_json``, a script reads.  ``jobsub.cli`` parses the
arguments and turns errors into one line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .errors import JobsubError
from .folder import JobFolder, find_submissions, split_folder_template
from .job import Job
from .report import SubmissionReport, report
from .states import JobState
from .storage import open_storage

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TASK_FAILED", "EXIT_USAGE"]

EXIT_OK = 0
"""The command did its work, and no task it looked at ended other than COMPLETED."""
EXIT_ERROR = 1
"""The command could not do its work: an unreadable folder or store, an unknown job, nothing there."""
EXIT_USAGE = 2
"""The command line was wrong (argparse's status)."""
EXIT_TASK_FAILED = 3
"""Some task ended other than COMPLETED (failed, cancelled, timed out, out of memory, lost ...)."""
EXIT_INTERRUPTED = 130
"""Stopped with Ctrl-C."""


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


# -- status ------------------------------------------------------------------------------------------
def gather(folder: str) -> list[SubmissionReport] | None:
    """A report per submission under ``folder``; None when there is none.

    Held submissions whose upstreams succeeded are released first (a held
    submission has no backend to run it on its own); a submission whose files
    are damaged or unreadable gets a report saying so, never hiding the others.
    """
    from .hold import check

    root = split_folder_template(folder)[0]
    storage = open_storage(root)
    subs = find_submissions(storage)
    if not subs:
        return None
    base = storage.url.rstrip("/")
    attached: list[tuple[str, list[Job[Any]] | str]] = []
    for sub in subs:  # all first: their states come in one call per backend
        name = sub.url[len(base) + 1 :] if sub.url.startswith(base + "/") else sub.key
        try:
            attached.append((name, Job.attach(sub.url)))
        except (JobsubError, OSError, ValueError, KeyError, TypeError) as exc:
            attached.append((name, f"cannot be read: {type(exc).__name__}: {exc}"))
    for _name, jobs in attached:
        if isinstance(jobs, list) and jobs and jobs[0].state is JobState.HELD:
            try:
                check(jobs[0].folder)
            except (JobsubError, OSError) as exc:
                _err(f"{jobs[0].folder.key}: its upstreams cannot be looked at ({exc})")
    reports = []
    for name, jobs in attached:
        if isinstance(jobs, str):
            reports.append(SubmissionReport(name=name, problem=jobs))
            continue
        try:
            reports.append(report(jobs, name))
        except (JobsubError, OSError) as exc:
            reports.append(SubmissionReport(name=name, backend=jobs[0].backend if jobs else "",
                                            problem=f"cannot ask its states: {exc}"))
    return reports


def exit_status(reports: Sequence[SubmissionReport]) -> int:
    """``EXIT_TASK_FAILED`` when a task ended badly (or a submission cannot be read), else ``EXIT_OK``."""
    return EXIT_TASK_FAILED if any(r.failed or r.problem for r in reports) else EXIT_OK


def status(folder: str, as_json: bool = False, watch: bool = False, interval_s: float = 2.0) -> int:
    """The table of ``jobsub status`` (``--json``: a list of records; ``--watch``: until all ended)."""
    from .display import colour_enabled, status_table

    colour = colour_enabled(sys.stdout)
    redraw = watch and not as_json and colour  # in place only on a terminal; a pipe gets one table per look
    while True:
        reports = gather(folder)
        if reports is None:
            root = split_folder_template(folder)[0]
            missing = "://" not in root and not os.path.exists(root)  # a typo in the path: say so
            _err(f"jobsub status: {folder} does not exist" if missing else f"jobsub status: no jobsub submissions in {folder}")
            return EXIT_ERROR
        if as_json:
            _out(json.dumps([r.as_json() for r in reports], indent=None if watch else 1))
        else:
            table = status_table(reports, colour=colour)
            if redraw:
                sys.stdout.write("\x1b[H\x1b[J")
                stamp = time.strftime("%H:%M:%S")
                table = f"every {interval_s:g}s: jobsub status {folder}    {stamp}\n\n{table}"
            elif watch:
                table += "\n"
            _out(table)
        if not watch or all(r.finished for r in reports):
            return exit_status(reports)
        time.sleep(interval_s)


# -- logs ---------------------------------------------------------------------------------------------
def logs(folder: str, job_id: str, *, task: int | None, err: bool, follow: bool, as_json: bool,
         interval_s: float = 0.5) -> int:
    """A job's stdout (or stderr), saying so when there is none yet; ``follow``: until the job ends."""
    if task is not None:
        job_id = f"{job_id}_{task}"
    try:
        job: Job[Any] = Job(folder, job_id)
    except FileNotFoundError as exc:
        _err(f"jobsub logs: {exc}" + (f"; here: jobsub logs {folder} {job_id} --task I" if _is_array(folder, job_id) else ""))
        return EXIT_ERROR
    stream = "stderr" if err else "stdout"
    read: Callable[[], str | None] = job.stderr if err else job.stdout
    if as_json:
        _out(json.dumps({"job_id": job.job_id, "state": str(job.state), "stream": stream, "text": read()}))
        return EXIT_OK
    shown = 0
    told = False
    while True:
        finished = job.done() if follow else True
        text = read() or ""
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        elif not shown and not told:
            state = job.state
            when = f"(it ended {state})" if state.is_final else f"yet (it is {state}" + (
                "; following it)" if follow else ")")
            _err(f"jobsub logs: no {stream} from job {job.job_id} {when}")
            told = True
        if finished:
            return EXIT_OK
        time.sleep(interval_s)


def _is_array(folder: str, job_id: str) -> bool:
    """Whether ``job_id`` names a whole array (its task 0 exists): the command line then says how to name a task."""
    try:
        Job(folder, f"{job_id}_0")
    except (JobsubError, OSError, ValueError):
        return False
    return True


# -- clean --------------------------------------------------------------------------------------------
def clean(folder: str, *, older_than_days: float | None, failed: bool, cache: bool, dry_run: bool,
          as_json: bool) -> int:
    """Remove finished submissions (older than N days, or failed ones) and/or the call cache.

    A submission with a task not ended (pending, running, held) is never removed.
    """
    from .submission import unlink_logs

    removed: list[str] = []
    kept: list[str] = []
    if older_than_days is not None or failed:
        reports = gather(folder) or []
        now = time.time()
        gone: dict[JobFolder, list[str]] = {}
        for rep in reports:
            if rep.problem or not rep.finished:
                kept.append(rep.name)
                continue
            old = older_than_days is not None and (now - (rep.submitted_at or now)) >= older_than_days * 86400
            if old or (failed and rep.failed):
                removed.append(rep.name)
                if not dry_run:
                    found = JobFolder.from_url(rep.url)
                    gone[found] = found.delete()  # with its id-index entries
        unlink_logs(gone, split_folder_template(folder)[1])
    cached = 0
    if cache:
        from .cache import clear

        cached = 0 if dry_run else clear(split_folder_template(folder)[0])
    if as_json:
        _out(json.dumps({"removed": removed, "kept_unfinished": kept, "cached_calls_removed": cached,
                         "dry_run": dry_run}))
        return EXIT_OK
    verb = "would remove" if dry_run else "removed"
    for name in removed:
        _out(f"{verb} {name}")
    if older_than_days is not None or failed:
        _out(f"{verb} {len(removed)} finished submission(s); {len(kept)} not finished kept")
    if cache:
        _out("would remove every cached call" if dry_run else f"removed {cached} cached call(s) from {folder}")
    return EXIT_OK


# -- info ---------------------------------------------------------------------------------------------
def info(as_json: bool) -> int:
    """Which backends can be used from here and, for the others, what is missing."""
    from ._version import __version__
    from .backends.base import get_backend, known_backends
    from .executor import AutoExecutor

    rows: list[dict[str, Any]] = []
    for name in known_backends():
        try:
            get_backend(name, {"root": "/tmp/jobsub-info"}).check()
        except (JobsubError, OSError, ImportError) as exc:
            rows.append({"backend": name, "usable": False, "missing": str(exc).splitlines()[0]})
        else:
            rows.append({"backend": name, "usable": True, "missing": ""})
    default = AutoExecutor.which()
    if as_json:
        _out(json.dumps({"version": __version__, "python": sys.version.split()[0], "default_backend": default,
                         "backends": rows}))
        return EXIT_OK
    _out(f"jobsub {__version__}, Python {sys.version.split()[0]} ({sys.executable})")
    _out(f"AutoExecutor() picks: {default}")
    width = max(len(row["backend"]) for row in rows)
    for row in rows:
        _out(f"  {row['backend']:<{width}}  " + ("usable" if row["usable"] else f"not usable: {row['missing']}"))
    return EXIT_OK


# -- graph --------------------------------------------------------------------------------------------
def graph(folder: str, job_ids: Sequence[str], mermaid: bool, as_json: bool) -> int:
    from .graph import graph as make_graph

    jobs: list[Job[Any]] = []
    for job_id in job_ids:
        try:
            jobs.append(Job(folder, job_id))
        except FileNotFoundError as exc:
            _err(f"jobsub graph: {exc}")
            return EXIT_ERROR
    view = make_graph(jobs)
    if as_json:
        _out(json.dumps([
            {"job_id": n.job.job_id, "function": n.function, "backend": n.job.backend, "state": str(n.state),
             "reason": n.reason, "upstream": n.upstream}
            for n in view.nodes
        ]))
    else:
        _out(view.mermaid() if mermaid else view.text())
    return EXIT_OK
