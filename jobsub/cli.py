"""``jobsub`` (or ``python -m jobsub``): look at job folders, release held submissions, build images.

    jobsub status runs/            a table: each submission's function, backend, ids, tasks by state,
                                   age, duration, peak memory, failed tasks with their first error
                                   line, why it waits (--watch: until all ended; --json)
    jobsub logs runs/ JOB_ID       the job's stdout (--err: stderr; --task I: task I of an array;
                                   --follow: until it ends; --json)
    jobsub cancel runs/ JOB_ID...  cancel jobs (and the jobs waiting on them)
    jobsub attach runs/            release the held submissions of a folder as their upstreams
                                   succeed, until none is held (--once: one look)
    jobsub graph runs/ JOB_ID...   the jobs and the jobs they take as arguments, with states
                                   (--mermaid: a Mermaid flowchart; --json)
    jobsub clean runs/             --older-than DAYS / --failed: remove finished submissions (never
                                   one still running); --cache: every cached call; --dry-run
    jobsub info                    which backends can be used here, and what the others miss (--json)
    jobsub image build TAG --base IMAGE [-r requirements.txt] [REQUIREMENT...] [--offline]
                                   an image with your packages, for the container backends
                                   (``jobsub.images.build_image``)
    jobsub install-submitit-alias  a ``submitit`` package that is jobsub, so tools built on
                                   submitit run unchanged (``jobsub.submitit_alias``)
    jobsub uninstall-submitit-alias

Exit status: 0 done (and no task looked at ended badly); 1 the command could not do its work
(unreadable folder or store, unknown job: one line on stderr says why); 2 a wrong command line;
3 some task ended other than COMPLETED (status, attach); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import commands
from .commands import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_TASK_FAILED
from .errors import JobsubError
from .folder import JobFolder, folder_at, lookup_id, split_folder_template
from .hold import check, released_here, watch_root  # loads the driver of held handles
from .job import Job
from .report import USAGE_READ_MAX as STATUS_REMOTE_USAGE_MAX
from .storage import open_storage

__all__ = ["STATUS_REMOTE_USAGE_MAX", "main", "one_line"]


def attach(folder: str, once: bool = False, interval_s: float = 1.0) -> int:
    """Release the held submissions under ``folder`` as their upstreams succeed (or end them)."""
    root = split_folder_template(folder)[0]
    storage = open_storage(root)
    held = watch_root(root)
    if storage.exists("meta.json"):  # the folder of one submission
        held.append(folder_at(root))
    if not held:
        print(f"no held submissions in {folder}")
        return EXIT_TASK_FAILED if once and _tasks_failed(folder) else EXIT_OK
    print(f"{len(held)} held submission(s) in {folder}")
    failed = False
    released: list[JobFolder] = []
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
                released += [sub] if ids else []
                if not ids:  # its tasks ended held: an upstream failed, or they were cancelled
                    print(f"{sub.key}: ended without being submitted")
                    failed = True
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
        return EXIT_INTERRUPTED
    if held:
        print(f"{len(held)} submission(s) still held: {', '.join(sub.key for sub in held)}")
    if once:  # a cron job's look (`attach --once || alert`): its status is `jobsub status`'s
        failed = _tasks_failed(folder) or failed
    elif released:  # wait for what was released: the exit status says how it ended
        from .progress import wait
        from .report import report

        jobs = [job for sub in released for job in Job.attach(sub.url)]
        wait(jobs)
        summary = report(jobs)
        for failure in summary.failures:
            print(f"task {failure.index} ({failure.job_id}) {failure.state}: {failure.error}")
        failed = failed or bool(summary.failed)
    return EXIT_TASK_FAILED if failed else EXIT_OK


def _tasks_failed(folder: str) -> bool:
    """Whether a task under ``folder`` ended badly (or a submission cannot be read), as
    ``jobsub status`` decides its exit status; each such task is printed."""
    reports = commands.gather(folder) or []
    for rep in reports:
        if rep.problem:
            print(f"{rep.name}: {rep.problem}")
        for failure in rep.failures:
            print(f"{rep.name}: task {failure.index} ({failure.job_id}) {failure.state}: {failure.error}")
    return commands.exit_status(reports) == EXIT_TASK_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """The ``jobsub`` command; a reader that stops early (``| head``) ends it quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def one_line(error: BaseException) -> str:
    """An error as one line: what a shell user reads instead of a traceback."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="jobsub",
        description="Look at jobsub job folders, release held submissions; build images for the container "
        "backends; alias submitit.",
        epilog="exit status: 0 done; 1 the command could not do its work; 2 a wrong command line; "
        "3 some task ended other than COMPLETED; 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"jobsub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def on_folder(name: str, what: str) -> argparse.ArgumentParser:
        """A command that looks at a folder given as to the executor."""
        command = sub.add_parser(name, help=what)
        command.add_argument("folder", help="an executor's folder, runs/%%j, or a store URL (s3://...)")
        return command

    p_status = on_folder("status", "a table of every submission in a folder")
    p_status.add_argument("--watch", action="store_true", help="refresh (in place on a terminal) until all ended")
    p_status.add_argument("--interval", type=float, default=2.0, help="seconds between looks with --watch")
    p_logs = on_folder("logs", "a job's output")
    p_logs.add_argument("job_id")
    p_logs.add_argument("--task", type=int, default=None, metavar="I", help="task I of the array JOB_ID")
    p_logs.add_argument("--err", action="store_true", help="stderr instead of stdout")
    p_logs.add_argument("-f", "--follow", action="store_true", help="print what comes until the job ends")
    p_cancel = on_folder("cancel", "cancel jobs")
    p_cancel.add_argument("job_ids", nargs="+")
    p_attach = on_folder("attach", "release the held submissions of a folder as their upstreams succeed")
    p_attach.add_argument("--once", action="store_true", help="look once, release what can be, and leave")
    p_attach.add_argument("--interval", type=float, default=1.0, help="seconds between looks (default 1)")
    p_graph = on_folder("graph", "jobs and the jobs they take as arguments, with their states")
    p_graph.add_argument("job_ids", nargs="+")
    p_graph.add_argument("--mermaid", action="store_true", help="a Mermaid flowchart instead of text")
    p_clean = on_folder("clean", "remove finished submissions, or the cached calls, of a folder")
    p_clean.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                         help="finished submissions submitted at least DAYS ago")
    p_clean.add_argument("--failed", action="store_true", help="finished submissions with a task that ended badly")
    p_clean.add_argument("--cache", action="store_true", help="every cached call (cache=True) of the folder")
    p_clean.add_argument("-n", "--dry-run", action="store_true", help="say what would be removed; remove nothing")
    p_info = sub.add_parser("info", help="which backends can be used here, and what the others miss")
    for reader in (p_status, p_logs, p_graph, p_clean, p_info):
        reader.add_argument("--json", action="store_true", help="JSON for scripts instead of text")
    p_image = sub.add_parser("image", help="container images for the docker (and cloud) backends")
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
        p_alias = sub.add_parser(
            command, help=f"{verb} a 'submitit' package that is jobsub, in this environment (tools built on submitit)"
        )
        p_alias.add_argument("--target", type=Path, default=None, metavar="DIR",
                             help="a site-packages directory (default: this Python's)")
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    # requirements may follow the options too (argparse stops filling a positional at the first option)
    ns, extra = parser.parse_known_args(argv)
    if ns.command == "image" and not any(arg.startswith("-") for arg in extra):
        ns.requirements += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if ns.command == "clean" and not (ns.cache or ns.failed or ns.older_than is not None):
        parser.error("clean: say what to remove (--older-than DAYS, --failed, --cache)")
    try:
        return _run(ns)
    except (JobsubError, OSError, ValueError) as exc:  # an unreadable folder, a missing bucket, no credentials
        print(f"jobsub {ns.command}: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _run(ns: argparse.Namespace) -> int:
    if ns.command == "image":
        return _build_image(ns)
    if ns.command in ("install-submitit-alias", "uninstall-submitit-alias"):
        return _submitit_alias(ns.command, ns.target)
    if ns.command == "status":
        return commands.status(ns.folder, as_json=ns.json, watch=ns.watch, interval_s=ns.interval)
    if ns.command == "attach":
        return attach(ns.folder, ns.once, ns.interval)
    if ns.command == "graph":
        return commands.graph(ns.folder, ns.job_ids, ns.mermaid, ns.json)
    if ns.command == "clean":
        return commands.clean(ns.folder, older_than_days=ns.older_than, failed=ns.failed, cache=ns.cache,
                              dry_run=ns.dry_run, as_json=ns.json)
    if ns.command == "info":
        return commands.info(ns.json)
    if ns.command == "logs":
        return commands.logs(ns.folder, ns.job_id, task=ns.task, err=ns.err, follow=ns.follow, as_json=ns.json)
    failed = EXIT_OK
    for job_id in ns.job_ids:  # each on its own: one bad id does not stop the others
        try:
            print(f"{job_id}: {'cancelled' if _cancel(ns.folder, job_id) else 'already finished'}")
        except (FileNotFoundError, JobsubError) as exc:
            print(f"jobsub cancel: {exc}", file=sys.stderr)
            failed = EXIT_ERROR
    return failed


def _cancel(folder: str, job_id: str) -> bool:
    """Cancel a job, or every task of an array given by its own id (in one backend call)."""
    storage = open_storage(split_folder_template(folder)[0])
    key = lookup_id(storage, job_id)
    tasks = Job.attach(JobFolder(storage, key).url) if key is not None else []
    if not any(task.job_id.rpartition("_")[0] == job_id for task in tasks):
        return Job(folder, job_id).cancel()  # a job or a task (raises for an unknown id)
    live = [task for task in tasks if task.job_id.rpartition("_")[0] == job_id and not task.done()]
    for task in live:  # recorded first, as Job.cancel does: every process then reads CANCELLED
        task.record_cancel()
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
