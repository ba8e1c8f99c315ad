"""``jobsub status|logs|cancel|image``: look at job folders, and build images, from a shell.

    jobsub status runs/            one line per submission: backend, ids, states, elapsed
    jobsub logs runs/ JOB_ID       the job's stdout (--err: stderr)
    jobsub cancel runs/ JOB_ID...  cancel jobs
    jobsub image build TAG --base IMAGE [-r requirements.txt] [REQUIREMENT...] [--offline]
                                   an image with your packages, for the container backends
                                   (``jobsub.images.build_image``)
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import JobsubError
from .folder import is_url, lookup_id, split_folder_template
from .job import Job
from .storage import open_storage

__all__ = ["main"]


def _submissions(folder: str) -> list[str]:
    """The submissions in ``folder``: itself, its children, or (a parent of several executors' folders)
    its grandchildren; ``runs/%j`` is read as ``runs``, as the executor does."""
    root = split_folder_template(folder)[0]
    if is_url(root):
        return _stored_submissions(root.rstrip("/"))
    base = Path(root)
    if (base / "meta.json").exists():
        return [str(base)]
    for pattern in ("*/meta.json", "*/*/meta.json"):
        found = sorted(p.parent for p in base.glob(pattern) if not p.parent.is_symlink())
        if found:
            return [str(p) for p in found]
    return []


def _stored_submissions(root: str) -> list[str]:
    """The same on an object store: one listing of the root, one lookup per child."""
    storage = open_storage(root)
    if storage.exists("meta.json"):
        return [root]
    return [f"{root}/{key}" for key in storage.list("") if storage.exists(f"{key}/meta.json")]


def status(folder: str) -> int:
    subs = _submissions(folder)
    if not subs:
        print(f"no jobsub submissions in {folder}", file=sys.stderr)
        return 1
    base = split_folder_template(folder)[0].rstrip("/")
    attached = [(sub, Job.attach(sub)) for sub in subs]  # all first: their states come in one call per backend
    for sub, jobs in attached:
        name = sub.removeprefix(base).lstrip("/") or sub.rpartition("/")[2]
        if not jobs:
            print(f"{name}  (not submitted)")
            continue
        states = collections.Counter(str(j.state) for j in jobs)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        peak = max((u.get("max_rss_mb", 0) for j in jobs for u in j.usage), default=0)
        ids = jobs[0].job_id if len(jobs) == 1 else f"{jobs[0].job_id}..{jobs[-1].job_id}"
        memory = f"  peak RSS {peak:.0f} MB" if peak else ""
        print(f"{name}  {jobs[0].backend:<8} {ids:<40} {summary}{memory}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobsub", description="Look at jobsub job folders; build images for the container backends.")
    commands = parser.add_subparsers(dest="command", required=True)
    p_status = commands.add_parser("status", help="states of every submission in a folder")
    p_status.add_argument("folder", help="a folder (path or s3:// URL) of submissions")
    p_logs = commands.add_parser("logs", help="a job's output")
    p_logs.add_argument("folder")
    p_logs.add_argument("job_id")
    p_logs.add_argument("--err", action="store_true", help="stderr instead of stdout")
    p_cancel = commands.add_parser("cancel", help="cancel jobs")
    p_cancel.add_argument("folder")
    p_cancel.add_argument("job_ids", nargs="+")
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
    # requirements may follow the options too (argparse stops filling a positional at the first option)
    ns, extra = parser.parse_known_args(argv)
    if ns.command == "image" and not any(arg.startswith("-") for arg in extra):
        ns.requirements += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command == "image":
        return _build_image(ns)
    if ns.command == "status":
        return status(ns.folder)
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
    root = split_folder_template(folder)[0]
    key = lookup_id(open_storage(root), job_id)
    tasks = Job.attach(f"{root.rstrip('/')}/{key}") if key is not None else []
    if not any(task.job_id.rpartition("_")[0] == job_id for task in tasks):
        return Job(folder, job_id).cancel()  # a job or a task (raises for an unknown id)
    live = [task for task in tasks if not task.done()]
    if live:
        live[0]._backend.cancel([job_id])  # the backend cancels a whole array by its id
    return bool(live)


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
