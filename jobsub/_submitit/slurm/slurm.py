"""``submitit.slurm.slurm`` names, including the private ones real tools import.

dora imports ``_parse_node_list`` from here to find a job's first host;
benchopt calls ``SlurmExecutor._equivalence_dict()``.  Each name is the
object jobsub itself uses: the Slurm backend lives in ``jobsub.backends.slurm``.
"""

from ...backends.slurm.nodelist import NodeListError as SlurmParseException
from ...backends.slurm.nodelist import expand_node_list as _parse_node_list
from ...environment import JobEnvironment as SlurmJobEnvironment
from ..aliases import SlurmExecutor, SlurmJob
from ..watcher import Watcher as SlurmInfoWatcher

__all__ = [
    "SlurmExecutor", "SlurmInfoWatcher", "SlurmJob", "SlurmJobEnvironment", "SlurmParseException", "_parse_node_list",
]
