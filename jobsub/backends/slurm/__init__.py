"""The Slurm backend: ``backend`` (states, cancel, logs), ``script`` (the sbatch script), ``query`` (commands, parsing)."""

from .backend import SlurmBackend
from .script import SlurmParameters

__all__ = ["SlurmBackend", "SlurmParameters"]
