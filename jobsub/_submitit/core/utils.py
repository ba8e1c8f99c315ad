"""``submitit.core.utils`` names, for code that imports them from there.

``except submitit.core.utils.FailedJobError`` keeps working, and so do the
small pickle-file helpers scripts use to save and load alongside their jobs.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...calls import DelayedSubmission, dumps_checked
from ...errors import FailedJobError, FailedSubmissionError, UncompletedJobError
from ...folder import JobPaths
from ...helpers import CommandFunction, environment_variables

__all__ = [
    "CommandFunction",
    "DelayedSubmission",
    "FailedJobError",
    "FailedSubmissionError",
    "JobPaths",
    "UncompletedJobError",
    "cloudpickle_dump",
    "environment_variables",
    "pickle_load",
    "temporary_save_path",
]


@contextlib.contextmanager
def temporary_save_path(filename: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``filename`` to; it becomes ``filename`` only if the block succeeds."""
    final = Path(filename)
    temporary = final.with_name(final.name + ".save_tmp")
    temporary.unlink(missing_ok=True)
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"nothing was written to {temporary} (the temporary path of {final})")
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def cloudpickle_dump(obj: Any, filename: str | os.PathLike[str]) -> None:
    """Cloudpickle ``obj`` into ``filename`` atomically (an error names what cannot be pickled)."""
    data = dumps_checked(obj, f"the object saved to {os.fspath(filename)}")
    with temporary_save_path(filename) as path:
        path.write_bytes(data)


def pickle_load(filename: str | os.PathLike[str]) -> Any:
    """Unpickle ``filename`` (written by ``cloudpickle_dump`` or any pickler)."""
    return pickle.loads(Path(filename).read_bytes())
