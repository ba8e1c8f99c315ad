"""Code packaging: ship the user's ``*.py`` (and jobsub itself) to an image that has only Python.

An image for a container backend (Docker, and later AWS Batch, GCP Batch,
Kubernetes) then needs nothing but ``python3`` and ``cloudpickle``: changing
code needs no image rebuild (redun's idea).

::

    client: build_code_package(cwd, includes, excludes)
              │  walk the tree (prune .git, venvs, __pycache__, ...), keep **/*.py + includes
              │  digest = sha256 over (path, mode, content hash)  ──> cache hit: nothing to tar
              └─> <cache>/<digest16>.tar.gz   deterministic: sorted, mtime/uid/gid fixed, gzip mtime 0
    backend: ships the tarball (bind mount, S3/GCS object, presigned URL, ConfigMap...)
    task:    python3 -c BOOTSTRAP_SOURCE <tarball|URL> <dest> -- -m jobsub.worker ...
              │  unpacks once into <dest> (temp dir + rename: concurrent tasks are safe)
              └─> sys.path / PYTHONPATH start with <dest>, then runs the module

The bootstrap is self-contained source text (the image has no jobsub before
it runs) and the host uses the very same ``unpack`` function, so the two
sides cannot drift apart.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import os
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CodePackageTooLargeError

__all__ = [
    "BOOTSTRAP_SOURCE",
    "DEFAULT_EXCLUDES",
    "DEFAULT_INCLUDES",
    "DEFAULT_MAX_MB",
    "CodePackage",
    "CodePackageTooLargeError",
    "bootstrap_command",
    "build_code_package",
    "collect_files",
    "default_cache_dir",
    "ensure_unpacked",
    "unpack_code_package",
]

logger = logging.getLogger("jobsub.packaging")

DEFAULT_INCLUDES: tuple[str, ...] = ("**/*.py",)
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git", ".hg", ".svn", "__pycache__", "*.egg-info", ".venv", "venv",
    ".tox", ".nox", "node_modules", "site-packages", "dist-packages",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "build", "dist",
)
"""Names pruned at any depth; a directory holding ``pyvenv.cfg`` (any virtualenv) is pruned too."""
DEFAULT_MAX_MB = 50.0
FIXED_MTIME = 315532800  # 1980-01-01: deterministic members, and valid for timestamp .pyc files
_FORMAT_TAG = b"jobsub-code-v1\0"
_JOBSUB_DIR = Path(__file__).resolve().parent
_UNPACKED_MARKER = ".jobsub-complete"  # written by ``unpack`` last: the directory is whole

# The in-container half.  Kept to the Python 3.8 subset: it runs on whatever python3 an
# image has.  ``unpack`` is also executed on the host (below), so both sides share it.
_UNPACK_SOURCE = r'''
import os, sys

def unpack(src, dest):
    """Unpack the tarball ``src`` (path, http(s), s3:// or gs:// URL) into ``dest`` once; safe under concurrency.

    ``src#sha256=<hex>``: the tarball must have that digest, or nothing of it runs (it was read
    from a bucket others may write to; the digest came with the task's command).
    """
    if os.path.exists(os.path.join(dest, ".jobsub-complete")):
        return
    import shutil, tarfile, tempfile
    src, _, expected = src.partition("#sha256=")
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
    try:
        if src.startswith(("http://", "https://")):
            import urllib.request
            stream = urllib.request.urlopen(src, timeout=300)
        elif src.startswith("s3://"):
            # with the task's own credentials (its job role): a presigned URL would carry the
            # submitter's and expire, possibly while the job still waits in its queue
            import boto3
            bucket, _, key = src[5:].partition("/")
            stream = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
        elif src.startswith("gs://"):  # likewise, with the task's service account
            import io
            from google.cloud import storage
            bucket, _, key = src[5:].partition("/")
            stream = io.BytesIO(storage.Client().bucket(bucket).blob(key).download_as_bytes())
        else:
            stream = open(src, "rb")
        if expected:
            import hashlib, io
            with stream:
                data = stream.read()
            if hashlib.sha256(data).hexdigest() != expected:
                sys.exit("jobsub bootstrap: the code package %s is not the one submitted (its sha256 differs): "
                         "not running it" % src)
            stream = io.BytesIO(data)
        with stream, tarfile.open(fileobj=stream, mode="r|gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or member.name.startswith("/") or ".." in parts:
                    continue  # only plain files, only below dest
                if hasattr(tarfile, "data_filter"):
                    tar.extract(member, tmp, filter="data")
                else:  # Python < 3.8.17/3.11.4: the checks above are the filter
                    tar.extract(member, tmp)
        open(os.path.join(tmp, ".jobsub-complete"), "w").close()
        try:
            os.rename(tmp, dest)
        except OSError:  # another task won the race: use its copy
            if not os.path.exists(os.path.join(dest, ".jobsub-complete")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
'''

_MAIN_SOURCE = r'''
def main(argv):
    import signal
    # a time-limit warning that comes before the worker installs its handler must not kill
    # the task (SIGUSR2's default action): ignored, as for a task that cannot checkpoint
    warning = getattr(signal, "SIG" + os.environ.get("JOBSUB_PREEMPT_SIGNAL", "USR2"), None)
    if warning is not None:
        signal.signal(warning, signal.SIG_IGN)
    sep = argv.index("--")
    src, dest, rest = argv[0], argv[1], argv[sep + 1:]
    if src:
        unpack(src, dest)
    sys.path.insert(0, dest)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = dest + (os.pathsep + old if old else "")  # for subprocesses
    if rest[:1] != ["-m"] or len(rest) < 2:
        sys.exit("jobsub bootstrap: expected '-- -m MODULE ARGS...', got %r" % (rest,))
    sys.argv = [rest[1]] + rest[2:]
    import runpy
    runpy.run_module(rest[1], run_name="__main__", alter_sys=True)

main(sys.argv[1:])
'''

BOOTSTRAP_SOURCE = _UNPACK_SOURCE + _MAIN_SOURCE
"""``python3 -c BOOTSTRAP_SOURCE PACKAGE DEST -- -m MODULE ARGS...`` (see ``bootstrap_command``)."""

_namespace: dict[str, object] = {}
exec(compile(_UNPACK_SOURCE, "<jobsub bootstrap>", "exec"), _namespace)
unpack_code_package: Callable[[str, str], None] = _namespace["unpack"]  # type: ignore[assignment]
"""``unpack_code_package(tarball_or_url, dest)``: the bootstrap's own unpacking, on the host."""


@dataclass(frozen=True)
class CodePackage:
    """A built code tarball: where it is, what it holds and its content digest."""

    path: Path
    digest: str
    """sha256 of the selected files (paths, modes, contents): equal trees, equal digests."""
    size: int
    """Size of the tarball in bytes."""
    files: tuple[str, ...]
    """Paths inside the tarball, sorted."""

    @property
    def name(self) -> str:
        """Short name used for cache entries and unpack directories."""
        return self.digest[:16]


def default_cache_dir() -> Path:
    """``$JOBSUB_CODE_CACHE``, else ``$XDG_CACHE_HOME/jobsub/code`` (``~/.cache/jobsub/code``)."""
    env = os.environ.get("JOBSUB_CODE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jobsub" / "code"


# -- selecting files ----------------------------------------------------------------------
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """gitignore-like glob: ``**`` spans directories, ``*``/``?`` stay within one.

    A pattern without ``/`` matches a name at any depth (``__pycache__``,
    ``*.pyc``); with one it matches the path from the root (``data/**/*.py``).
    """
    pattern = pattern.strip().strip("/")
    anchored = "/" in pattern
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(prefix + "".join(out) + r"\Z")


def _matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    compiled = [_glob_regex(p) for p in patterns if p.strip()]
    return lambda rel: any(r.match(rel) for r in compiled)


def collect_files(
    root: str | os.PathLike[str],
    includes: Sequence[str] = (),
    excludes: Sequence[str] = (),
    *,
    exclude_paths: Sequence[str | os.PathLike[str]] = (),
    include_jobsub: bool = True,
) -> dict[str, Path]:
    """Archive path -> file for the tree at ``root``, plus jobsub's own sources.

    Args:
        root: the tree to package (usually the working directory).
        includes: patterns added to ``DEFAULT_INCLUDES`` (``**/*.py``).
        excludes: patterns added to ``DEFAULT_EXCLUDES``; a matching directory is not entered.
        exclude_paths: absolute paths never entered (e.g. the job folders, if under ``root``).
            Roots of job folders (they hold ``.ids``) and unpacked code packages are never
            entered either, whatever executor made them.
        include_jobsub: add ``jobsub/**/*.py`` from this installation (wins over a same-named
            path of the tree), so the image needs no jobsub of its own.
    """
    base = Path(root).resolve()
    want = _matcher([*DEFAULT_INCLUDES, *includes])
    skip = _matcher([*DEFAULT_EXCLUDES, *excludes])
    skip_abs = {os.path.realpath(p) for p in exclude_paths}
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if dirpath != str(base) and (_UNPACKED_MARKER in filenames or ".ids" in dirnames):
            dirnames[:] = []  # jobsub's own output: an unpacked code package, a root of job folders
            continue
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if skip(rel_dir + d) or os.path.islink(full) or full in skip_abs:
                continue
            if os.path.exists(os.path.join(full, "pyvenv.cfg")):
                continue  # a virtualenv, whatever its name
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            rel = rel_dir + name
            full = os.path.join(dirpath, name)
            if want(rel) and not skip(rel) and os.path.isfile(full):
                found[rel] = Path(full)
    if include_jobsub:
        for path in _JOBSUB_DIR.rglob("*.py"):
            rel_path = path.relative_to(_JOBSUB_DIR)
            if "__pycache__" not in rel_path.parts:
                found["jobsub/" + rel_path.as_posix()] = path
    return dict(sorted(found.items()))


# -- digest and tarball -----------------------------------------------------------------------
_file_digests: dict[str, tuple[tuple[int, int, int], str]] = {}


def _file_digest(path: Path, st: os.stat_result) -> str:
    """sha256 of a file, remembered by (size, mtime, inode) so an unchanged tree is not re-read."""
    key = str(path)
    signature = (st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _file_digests.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _file_digests[key] = (signature, digest)
    return digest


def _mode(st: os.stat_result) -> int:
    return 0o755 if st.st_mode & stat.S_IXUSR else 0o644


def _too_large(files: dict[str, Path], sizes: dict[str, int], max_bytes: int, root: str) -> CodePackageTooLargeError:
    total = sum(sizes.values())
    biggest = sorted(sizes, key=sizes.__getitem__, reverse=True)[:5]
    listing = "\n".join(f"  {sizes[n] / 1e6:8.2f} MB  {n}" for n in biggest)
    return CodePackageTooLargeError(
        f"the code to package from {root} is {total / 1e6:.1f} MB ({len(files)} files), over the "
        f"cap of {max_bytes / 1e6:.1f} MB. Largest files:\n{listing}\n"
        "Exclude what the job does not import (code_excludes=[...]), raise code_max_mb, "
        "or turn packaging off (package_code=False) and put the code in the image."
    )


def build_code_package(
    root: str | os.PathLike[str],
    includes: Sequence[str] = (),
    excludes: Sequence[str] = (),
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    max_mb: float = DEFAULT_MAX_MB,
    exclude_paths: Sequence[str | os.PathLike[str]] = (),
    include_jobsub: bool = True,
) -> CodePackage:
    """Package the tree at ``root`` (see ``collect_files``) as a deterministic ``.tar.gz``.

    The tarball is cached in ``cache_dir`` under its content digest: submitting
    the same tree again re-reads only files whose size or mtime changed, and
    tars nothing.

    Raises:
        CodePackageTooLargeError: the selected files add up to more than ``max_mb``.
    """
    files = collect_files(root, includes, excludes, exclude_paths=exclude_paths, include_jobsub=include_jobsub)
    stats = {name: path.stat() for name, path in files.items()}
    sizes = {name: st.st_size for name, st in stats.items()}
    max_bytes = int(max_mb * 1e6)
    if sum(sizes.values()) > max_bytes:
        raise _too_large(files, sizes, max_bytes, os.fspath(root))
    hasher = hashlib.sha256(_FORMAT_TAG)
    for name, path in files.items():
        entry = f"{name}\0{_mode(stats[name]):o}\0{_file_digest(path, stats[name])}\n"
        hasher.update(entry.encode())
    digest = hasher.hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{digest[:16]}.tar.gz"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = _tar_bytes(files, stats)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.debug("packaged %d files of %s into %s (%d bytes)", len(files), root, target, len(data))
        prune_cache(cache)
    else:
        with contextlib.suppress(OSError):
            os.utime(target)  # last use, for pruning
    return CodePackage(target, digest, target.stat().st_size, tuple(files))


def _tar_bytes(files: dict[str, Path], stats: dict[str, os.stat_result]) -> bytes:
    """Sorted members, fixed mtime/owner, gzip header without name or time: same tree, same bytes."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in files.items():
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = _mode(stats[name])
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def ensure_unpacked(package: CodePackage | str | os.PathLike[str], dest: str | os.PathLike[str] | None = None) -> Path:
    """Unpack ``package`` (or the tarball at that path) next to it (or into ``dest``) once; returns the directory.

    Backends sharing a file system with their tasks (Docker) unpack on the
    host once per digest, so tasks skip the work and share compiled ``.pyc``.
    """
    tarball = package.path if isinstance(package, CodePackage) else Path(package)
    target = Path(dest) if dest is not None else tarball.with_name(tarball.name.removesuffix(".tar.gz"))
    fresh = not (target / ".jobsub-complete").exists()
    unpack_code_package(str(tarball), str(target))
    if fresh and (target / "jobsub").is_dir():
        # every task imports the worker: compile it once here rather than in each task of
        # the first wave (they would all compile it at once); the user's modules are
        # compiled by the first task that imports them, and shared through the mount
        import compileall

        compileall.compile_dir(target / "jobsub", quiet=2)
    return target


def prune_cache(cache_dir: str | os.PathLike[str], keep: int = 32, min_age_s: float = 7 * 86400) -> None:
    """Remove cached packages beyond the ``keep`` most recently used, if unused for ``min_age_s``.

    The age guard keeps a package that a long job may still import from (its
    unpacked directory is mounted into running containers).
    """
    import shutil

    cache = Path(cache_dir)
    tarballs = sorted(cache.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    for old in tarballs[keep:]:
        if now - old.stat().st_mtime < min_age_s:
            continue
        old.unlink(missing_ok=True)
        shutil.rmtree(old.with_name(old.name.removesuffix(".tar.gz")), ignore_errors=True)


def bootstrap_command(python: str, package: str, dest: str, module_args: Sequence[str]) -> list[str]:
    """The argv that unpacks ``package`` into ``dest`` and runs ``module_args`` (``-m MOD ...``).

    ``package`` may be a path visible to the task, an http(s) URL, or an
    ``s3://`` or ``gs://`` URL (read with the task's boto3 or google-cloud-storage
    and its own credentials); an empty string skips unpacking (``dest`` is ready).
    """
    return [python, "-c", BOOTSTRAP_SOURCE, package, dest, "--", *module_args]
