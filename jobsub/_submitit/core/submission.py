"""``submitit.core.submission`` names: the program a job runs is ``python -m jobsub.worker``."""

from ...worker import main as submitit_main

__all__ = ["submitit_main"]
