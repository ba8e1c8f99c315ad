"""``submitit.local``: the same names, served by jobsub (see ``jobsub.local.local`` and ``.debug``)."""

from . import debug, local

__all__ = ["debug", "local"]
