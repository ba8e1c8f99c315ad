"""``submitit.auto``: the same names, served by jobsub (see ``jobsub.auto.auto``)."""

from .auto import AutoExecutor

__all__ = ["AutoExecutor"]
