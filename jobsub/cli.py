"""``jobsub status|logs|cancel|image``: look at job folders, and build images, from a shell.

    jobsub status runs/            one line per submission: backend, ids, states, elapsed
    jobsub logs runs/ JOB_ID       the job's stdout (--err: stderr)
    jobsub cancel runs/ JOB_ID...  cancel jobs (and the jobs waiting on them)
    jobsub attach runs/            release the held submissions of a folder as their upstreams
                                   succeed, until none is held (--once: one look)
    jobsub graph runs/ JOB_ID...   the jobs and the jobs they take as arguments, with states
                                   (--mermaid: a Mermaid flowchart)
    jobsub clean --cache runs/     forget every cached call of a folder (jobsub.cache)
    jobsub image build TAG --base IMAGE [-r requirements.txt] [REQUIREMENT...] [--offline]
                                   an image with your packages, for the container backends
                                   (``jobsub.images.build_image``)
    jobsub install-submitit-alias  a ``submitit`` package that is jobsub, so tools built on
                                   submitit run unchanged (``jobsub.submitit_alias``)
    jobsub uninstall-submitit-alias
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import JobsubError
from .folder import JobFolder, find_submissions, folder_at, lookup_id, split_folder_template
from .hold import check, released_here, watch_root  # loads the driver of held handles
from .job import Job
from .states import JobState
from .storage import open_storage

__all__ = ["main"]

STATUS_REMOTE_USAGE_MAX = 100
"""Tasks of a bucket submission whose usage ``status`` reads for its peak memory: each is a
request (10,000 tasks would take minutes); past that, the line shows no peak."""


def status(folder: str) -> int:
    """One line per submission under ``folder`` (a path, ``runs/%j``, or a store URL).

    A submission whose files are damaged or unreadable gets a line saying so;
    it never hides the others.
    """
    root = split_folder_template(folder)[0]
    subs = find_submissions(open_storage(root))
    if not subs:
        print(f"no jobsub submissions in {folder}", file=sys.stderr)
        return 1
    base = open_storage(root).url.rstrip("/")
    attached: list[tuple[str, list[Job[Any]] | str]] = []
    for sub in subs:  # all first: their states come in one call per backend
        name = sub.url[len(base) + 1 :] if sub.url.startswith(base + "/") else sub.key
        try:
            attached.append((name, Job.attach(sub.url)))
        except (JobsubError, OSError, ValueError, KeyError, TypeError) as exc:
            attached.append((name, f"(cannot be read: {type(exc).__name__}: {exc})"))
    held = [jobs[0].folder for _, jobs in attached if not isinstance(jobs, str) and jobs and jobs[0].is_held()]
    if held:  # release what can be now (a held submission has no backend to run it on its own)
        for folder_ in held:
            try:
                check(folder_)
            except (JobsubError, OSError) as exc:
                print(f"{folder_.key}: its upstreams cannot be looked at ({exc})", file=sys.stderr)
    for name, jobs in attached:
        if isinstance(jobs, str) or not jobs:
            print(f"{name}  {jobs or '(not submitted)'}")
            continue
        try:
            states = collections.Counter(str(j.state) for j in jobs)
            peak = 0.0
            if jobs[0].folder.local_file() is not None or len(jobs) <= STATUS_REMOTE_USAGE_MAX:
                peak = max((u.get("max_rss_mb", 0) for j in jobs for u in _usage(j)), default=0)
        except (JobsubError, OSError) as exc:
            print(f"{name}  {jobs[0].backend:<8} (cannot ask its states: {exc})")
            continue
        summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        ids = jobs[0].job_id if len(jobs) == 1 else f"{jobs[0].job_id}..{jobs[-1].job_id}"
        memory = f"  peak RSS {peak:.0f} MB" if peak else ""
        # why what waits waits: its upstreams (held), or the scheduler's reason (a drained node...)
        waiting = next((j.status().reason for j in jobs if j.state in (JobState.HELD, JobState.PENDING)), "")
        print(f"{name}  {jobs[0].backend:<8} {ids:<40} {summary}{memory}" + (f"  ({waiting})" if waiting else ""))
    return 0


def attach(folder: str, once: bool = False, interval_s: float = 1.0) -> int:
    """Release the held submissions under ``folder`` as their upstreams succeed (or end them)."""
    root = split_folder_template(folder)[0]
    storage = open_storage(root)
    held = watch_root(root)
    if storage.exists("meta.json"):  # the folder of one submission
        held.append(folder_at(root))
    if not held:
        print(f"no held submissions in {folder}")
        return 0
    print(f"{len(held)} held submission(s) in {folder}")
    try:
        while held:
            still = []
            for sub in held:
                try:
                    finished = check(sub)
                except (JobsubError, OSError) as exc:
                    print(f"{sub.key}: cannot be looked at ({exc})", file=sys.stderr)
                    finished = False
                if not finished:
                    still.append(sub)
                    continue
                try:
                    ids = [s["id"] for s in sub.read_meta().get("submissions", [])]
                except (JobsubError, OSError):
                    ids = []
                if not ids:
                    print(f"{sub.key}: ended without being submitted")
                elif released_here(sub):
                    print(f"{sub.key}: released as {', '.join(ids)}")
                else:  # several watchers of one folder: one claim, one submission, the others only see it
                    print(f"{sub.key}: released by another process as {', '.join(ids)}")
            held = still
            if once or not held:
                break
            time.sleep(interval_s)
    except KeyboardInterrupt:
        print(f"stopped; {len(held)} submission(s) still held", file=sys.stderr)
        return 130
    if held:
        print(f"{len(held)} submission(s) still held: {', '.join(sub.key for sub in held)}")
    return 0


def graph(folder: str, job_ids: Sequence[str], mermaid: bool) -> int:
    from .graph import graph as make_graph

    jobs: list[Job[Any]] = []
    for job_id in job_ids:
        try:
            jobs.append(Job(folder, job_id))
        except (FileNotFoundError, JobsubError) as exc:
            print(f"jobsub graph: {exc}", file=sys.stderr)
            return 1
    view = make_graph(jobs)
    print(view.mermaid() if mermaid else view.text())
    return 0


def _usage(job: Job[Any]) -> list[dict[str, Any]]:
    """A job's usage records; a damaged or unreadable result has none (its state says why)."""
    try:
        return job.usage
    except (JobsubError, OSError, TypeError):
        return []


def main(argv: Sequence[str] | None = None) -> int:
    """The ``jobsub`` command; a reader that stops early (``| head``) ends it quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobsub",
        description="Look at jobsub job folders, release held submissions; build images for the container "
        "backends; alias submitit.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_status = commands.add_parser("status", help="states of every submission in a folder")
    p_status.add_argument("folder", help="an executor's folder, runs/%%j, or a store URL (s3://...)")
    p_logs = commands.add_parser("logs", help="a job's output")
    p_logs.add_argument("folder")
    p_logs.add_argument("job_id")
    p_logs.add_argument("--err", action="store_true", help="stderr instead of stdout")
    p_cancel = commands.add_parser("cancel", help="cancel jobs")
    p_cancel.add_argument("folder")
    p_cancel.add_argument("job_ids", nargs="+")
    p_attach = commands.add_parser("attach", help="release the held submissions of a folder as their upstreams succeed")
    p_attach.add_argument("folder")
    p_attach.add_argument("--once", action="store_true", help="look once, release what can be, and leave")
    p_attach.add_argument("--interval", type=float, default=1.0, help="seconds between looks (default 1)")
    p_graph = commands.add_parser("graph", help="jobs and the jobs they take as arguments, with their states")
    p_graph.add_argument("folder")
    p_graph.add_argument("job_ids", nargs="+")
    p_graph.add_argument("--mermaid", action="store_true", help="a Mermaid flowchart instead of text")
    p_clean = commands.add_parser("clean", help="remove what jobsub keeps beside the jobs of a folder")
    p_clean.add_argument("folder")
    p_clean.add_argument("--cache", action="store_true", help="every cached call (cache=True) of the folder")
    p_image = commands.add_parser("image", help="container images for the docker (and cloud) backends")
    image_commands = p_image.add_subparsers(dest="image_command", required=True)
    p_build = image_commands.add_parser(
        "build", help="build TAG from a base image on the engine, with packages installed from host-built wheels"
    )
    p_build.add_argument("tag", help="name of the new image, e.g. myproject:env")
    p_build.add_argument("requirements", nargs="*", help="pip requirement specs, wheels or project directories")
    p_build.add_argument("--base", required=True, help="an image already on the engine, with python3 in it")
    p_build.add_argument("-r", "--requirement", action="append", default=[], metavar="FILE",
                         help="a requirements file (repeatable)")
    p_build.add_argument("--offline", action="store_true", help="no package index: pip's cache and --find-links only")
    p_build.add_argument("--find-links", action="append", default=[], metavar="DIR", help="a directory of wheels")
    for command, verb in (("install-submitit-alias", "write"), ("uninstall-submitit-alias", "remove")):
        p_alias = commands.add_parser(
            command, help=f"{verb} a 'submitit' package that is jobsub, in this environment (tools built on submitit)"
        )
        p_alias.add_argument("--target", type=Path, default=None, metavar="DIR",
                             help="a site-packages directory (default: this Python's)")
    # requirements may follow the options too (argparse stops filling a positional at the first option)
    ns, extra = parser.parse_known_args(argv)
    if ns.command == "image" and not any(arg.startswith("-") for arg in extra):
        ns.requirements += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command == "image":
        return _build_image(ns)
    if ns.command in ("install-submitit-alias", "uninstall-submitit-alias"):
        return _submitit_alias(ns.command, ns.target)
    if ns.command == "status":
        return status(ns.folder)
    if ns.command == "attach":
        return attach(ns.folder, ns.once, ns.interval)
    if ns.command == "graph":
        return graph(ns.folder, ns.job_ids, ns.mermaid)
    if ns.command == "clean":
        if not ns.cache:
            parser.error("clean: say what to remove (--cache)")
        from .cache import clear

        print(f"removed {clear(split_folder_template(ns.folder)[0])} cached call(s) from {ns.folder}")
        return 0
    if ns.command == "logs":
        try:
            job: Job[object] = Job(ns.folder, ns.job_id)
        except (FileNotFoundError, JobsubError) as exc:
            print(f"jobsub logs: {exc}", file=sys.stderr)
            return 1
        text = job.stderr() if ns.err else job.stdout()
        sys.stdout.write(text or "")
        return 0
    failed = 0
    for job_id in ns.job_ids:  # each on its own: one bad id does not stop the others
        try:
            print(f"{job_id}: {'cancelled' if _cancel(ns.folder, job_id) else 'already finished'}")
        except (FileNotFoundError, JobsubError) as exc:
            print(f"jobsub cancel: {exc}", file=sys.stderr)
            failed = 1
    return failed


def _cancel(folder: str, job_id: str) -> bool:
    """Cancel a job, or every task of an array given by its own id (in one backend call)."""
    storage = open_storage(split_folder_template(folder)[0])
    key = lookup_id(storage, job_id)
    tasks = Job.attach(JobFolder(storage, key).url) if key is not None else []
    if not any(task.job_id.rpartition("_")[0] == job_id for task in tasks):
        return Job(folder, job_id).cancel()  # a job or a task (raises for an unknown id)
    live = [task for task in tasks if not task.done()]
    if live:
        live[0].backend_instance.cancel([job_id])  # the backend cancels a whole array by its id
    return bool(live)


def _submitit_alias(command: str, target: Path | None) -> int:
    from ._submitit.submitit_alias import AliasError, install_alias, uninstall_alias

    try:
        if command == "install-submitit-alias":
            print(f"installed {install_alias(target)}: `import submitit` is now jobsub")
        else:
            print(f"removed {uninstall_alias(target)}")
    except AliasError as exc:
        print(f"jobsub {command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _build_image(ns: argparse.Namespace) -> int:
    from .images import build_image

    if not ns.requirements and not ns.requirement:
        print("jobsub image build: give requirements (REQUIREMENT... or -r FILE)", file=sys.stderr)
        return 2
    pip_args = [arg for path in ns.requirement for arg in ("-r", path)]
    try:
        image_id = build_image(
            ns.tag, ns.requirements, ns.base, offline=ns.offline, find_links=ns.find_links, pip_args=pip_args
        )
    except JobsubError as exc:
        print(f"jobsub image build: {exc}", file=sys.stderr)
        return 1
    print(f"{ns.tag} {image_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
