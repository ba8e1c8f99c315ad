"""``submitit.local.local`` names: jobsub's local backend under submitit's module path.

One ``Job`` and one ``JobEnvironment`` class serve every backend, so the
per-backend names are the same objects.
"""

from ...environment import JobEnvironment as LocalJobEnvironment
from ..aliases import LocalExecutor, LocalJob

__all__ = ["LocalExecutor", "LocalJob", "LocalJobEnvironment"]
