"""submitit's per-backend class names, as thin spellings of ``Executor(folder, backend)``.

``jobsub.SlurmExecutor(folder, max_num_timeout=3)`` takes the backend's own
key names (``partition``, ``time``, ``mem``...), as submitit's did.
``name()`` is a classmethod here, as in submitit, so code can ask a class
which backend it stands for before making one.
"""

from __future__ import annotations

import os
from typing import Any

from ..executor import Executor
from ..job import Job

__all__ = ["DebugExecutor", "DebugJob", "LocalExecutor", "LocalJob", "SlurmExecutor", "SlurmJob"]


class LocalExecutor(Executor):
    def __init__(self, folder: str | os.PathLike[str], **parameters: Any) -> None:
        super().__init__(folder, "local", **parameters)

    @classmethod
    def name(cls) -> str:
        """``"local"``, asked of the class or of an instance."""
        return "local"


class DebugExecutor(Executor):
    def __init__(self, folder: str | os.PathLike[str], **parameters: Any) -> None:
        super().__init__(folder, "debug", **parameters)

    @classmethod
    def name(cls) -> str:
        """``"debug"``, asked of the class or of an instance."""
        return "debug"


class SlurmExecutor(Executor):
    def __init__(self, folder: str | os.PathLike[str], **parameters: Any) -> None:
        super().__init__(folder, "slurm", **parameters)

    @classmethod
    def name(cls) -> str:
        """``"slurm"``, asked of the class or of an instance."""
        return "slurm"

    @classmethod
    def _equivalence_dict(cls) -> dict[str, str]:
        """Common key -> the Slurm key with that meaning (benchopt merges configs with it).

        Derived from the Slurm backend's own spellings, so it cannot disagree
        with what ``update_parameters`` accepts: each native key is the
        backend's alias of the common key, or the common key itself where
        Slurm spells it the same.  ``mem_gb`` maps to ``mem`` as in submitit
        (``mem`` takes Slurm's sizes: an int there is MB, not GB).
        """
        from ..backends.base import load_backend_class

        aliases = load_backend_class("slurm").aliases
        native = {common: alias for alias, common in aliases.items() if alias != "num_gpus"}  # legacy name
        keys = ("name", "timeout_min", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node")
        return {"mem_gb": "mem", **{key: native.get(key, key) for key in keys}}


# submitit had one Job class per backend; here one class serves all of them
LocalJob = DebugJob = SlurmJob = Job
