"""``submitit.slurm``: the same names, served by jobsub (see ``jobsub.slurm.slurm``)."""

from . import slurm

__all__ = ["slurm"]
