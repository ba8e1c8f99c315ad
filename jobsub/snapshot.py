"""Run jobs from a copy of the repository taken at submission time (submitit's ``RsyncSnapshot``).

A job that starts an hour after it was submitted (queued, requeued after a
preemption) would otherwise import the code as it is *then*, edits made in
the meantime included.  Inside ``with RsyncSnapshot(dir):`` the working
directory is a copy of the files git tracks, so what is submitted there runs
that copy::

    repo/ ──git ls-files──> tracked files (+ include, - exclude) ──copy changed ones──> snapshot_dir/
    with-block: cwd = snapshot_dir; sys.path entries inside repo/ point into snapshot_dir/

The copy needs only git (the name is submitit's; rsync is not used), and
files whose size and modification time match the snapshot's are not copied
again, so re-entering the block for every sweep is cheap.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["RsyncSnapshot"]


class RsyncSnapshot:
    """Copy the repository's tracked files to ``snapshot_dir`` and work from there in the block.

    Args:
        snapshot_dir: where the copy goes (created; reused and refreshed if it exists).
        root_dir: the repository; default: the one holding the working directory.
        with_submodules: copy the tracked files of submodules too.
        exclude: glob patterns; a file is left out if its relative path or one of its path
            components matches (``"*.ipynb"``, ``"data"``, ``"docs/*"``).
        include: relative paths copied even though git does not track them (build artifacts
            such as ``.so`` files).  Untracked files are otherwise left out: ``git add`` them.
    """

    def __init__(
        self,
        snapshot_dir: str | os.PathLike[str],
        root_dir: str | os.PathLike[str] | None = None,
        with_submodules: bool = False,
        exclude: Sequence[str] = (),
        include: Sequence[str] = (),
    ) -> None:
        self.available(throw=True)
        self.snapshot_dir = Path(snapshot_dir).absolute()
        self.root_dir = Path(root_dir).absolute() if root_dir else Path(_git(["rev-parse", "--show-toplevel"], "."))
        self.with_submodules = with_submodules
        self.exclude = list(exclude)
        self.include = list(include)
        self.original_dir = Path.cwd()
        self._saved_path: list[str] = []

    @staticmethod
    def available(throw: bool = False) -> bool:
        """True if a snapshot can be taken here (git is on PATH)."""
        if shutil.which("git"):
            return True
        if throw:
            raise RuntimeError("RsyncSnapshot needs git on PATH")
        return False

    def files(self) -> list[str]:
        """Relative paths the snapshot holds: tracked (not gitlinks), plus ``include``, minus ``exclude``."""
        args = ["ls-files", "-z", "--stage"] + (["--recurse-submodules"] if self.with_submodules else [])
        names = []
        for entry in _git(args, self.root_dir).split("\0"):
            meta, _, name = entry.partition("\t")
            if name and not meta.startswith("160000"):  # a submodule's commit, not a file
                names.append(name)
        names += self.include
        return sorted({n for n in names if not self._excluded(n)})

    def _excluded(self, name: str) -> bool:
        parts = name.split("/")
        return any(fnmatch.fnmatch(name, p) or any(fnmatch.fnmatch(part, p) for part in parts) for p in self.exclude)

    def take(self) -> None:
        """Bring the snapshot up to date with the repository (only changed files are copied)."""
        for name in self.files():
            source, target = self.root_dir / name, self.snapshot_dir / name
            if not source.exists() and not source.is_symlink():  # tracked, deleted in the work tree
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                link = os.readlink(source)
                if not (target.is_symlink() and os.readlink(target) == link):
                    target.unlink(missing_ok=True)
                    os.symlink(link, target)
            elif target.is_symlink() or not target.exists() or not _same(source.stat(), target.stat()):
                target.unlink(missing_ok=True)
                shutil.copy2(source, target)

    def __enter__(self) -> RsyncSnapshot:
        self.take()
        self.original_dir = Path.cwd()
        self._saved_path = list(sys.path)
        root = str(self.root_dir)
        # imports made from here on, and jobs that copy this process's sys.path (local backend),
        # find the snapshot's modules rather than the repository's
        sys.path[:] = [
            str(self.snapshot_dir / os.path.relpath(p, root)) if _inside(p, root) else p for p in sys.path
        ]
        os.chdir(self.snapshot_dir)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.chdir(self.original_dir)
        sys.path[:] = self._saved_path


def _git(args: list[str], cwd: str | os.PathLike[str]) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {os.fspath(cwd)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _inside(path: str, root: str) -> bool:
    if not path:  # "": the working directory, which the block makes the snapshot anyway
        return False
    absolute = os.path.abspath(path)
    return absolute == root or absolute.startswith(root + os.sep)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns
