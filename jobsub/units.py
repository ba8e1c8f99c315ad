"""Slurm's own spellings of a time limit and of a memory size, read as sbatch reads them.

Tools written for submitit pass Slurm keys in Slurm's format (benchopt sends
``slurm_time="00:05:00"``, dora ``mem="40GB"``); these pure functions accept
exactly what ``sbatch --time`` / ``sbatch --mem`` accept, and refuse the rest
at ``update_parameters`` with a message that shows the valid forms, instead
of an sbatch error after the job folder was written.

::

    minutes_from_slurm_time("90")          -> 90.0      minutes
    minutes_from_slurm_time("05:30")       -> 5.5       MM:SS
    minutes_from_slurm_time("1:00:00")     -> 60.0      HH:MM:SS
    minutes_from_slurm_time("2-12")        -> 3600.0    D-HH (also D-HH:MM, D-HH:MM:SS)
    check_slurm_memory("mem", "4G")        -> "4G"      integer + K/M/G/T (+ optional B); a bare int is MB
"""

from __future__ import annotations

import re
from typing import Any

from .errors import InvalidParameterError

__all__ = ["TIME_FORMATS", "check_slurm_memory", "minutes_from_slurm_time", "slurm_time_parameter"]

TIME_FORMATS = "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
"""The forms ``sbatch --time`` reads, as the error messages name them."""

# sbatch does not check that seconds < 60 or minutes < 60 ("00:150" is 150 s): neither do we
_CLOCK = re.compile(r"(\d+)(?::(\d+))?(?::(\d+))?\Z")
_DAYS = re.compile(r"(\d+)-(\d+)(?::(\d+))?(?::(\d+))?\Z")
_MEMORY = re.compile(r"(\d+)([KMGT]B?)?\Z", re.IGNORECASE)
_NO_LIMIT = frozenset({"INFINITE", "UNLIMITED"})


def minutes_from_slurm_time(text: str, key: str = "time") -> float:
    """Minutes in a Slurm time string (see the module docstring for the forms).

    ``key`` is the parameter as the user typed it, for the error message.

    Raises:
        InvalidParameterError: not one of Slurm's forms, or no limit at all
            (``0``, ``INFINITE``): jobsub needs a positive limit or none set.
    """
    spelled = text.strip()
    days_match = _DAYS.match(spelled)
    if days_match:
        days, hours, minutes, seconds = (int(part or 0) for part in days_match.groups())
        total = days * 1440 + hours * 60 + minutes + seconds / 60
    else:
        clock = _CLOCK.match(spelled)
        if clock is None:
            if spelled.upper() in _NO_LIMIT:
                raise InvalidParameterError(
                    f"{key}={text!r}: no limit is not a value; leave the key unset (None) for the partition's limit"
                )
            raise InvalidParameterError(f"{key}={text!r} is not a Slurm time: use {TIME_FORMATS}")
        parts = [int(part) for part in clock.groups() if part is not None]
        if len(parts) == 1:
            total = float(parts[0])
        elif len(parts) == 2:
            total = parts[0] + parts[1] / 60
        else:
            total = parts[0] * 60 + parts[1] + parts[2] / 60
    if total <= 0:
        raise InvalidParameterError(
            f"{key}={text!r}: Slurm reads 0 as no limit; give a positive limit, or leave the key unset (None)"
        )
    return total


def slurm_time_parameter(key: str, value: Any) -> Any:
    """Read a string given to a time key as Slurm's time; numbers (minutes) pass through.

    Only the ``time`` spellings (``time``, ``slurm_time``) take Slurm's
    strings: ``timeout_min`` is minutes as a number everywhere, and a string
    there is refused, pointing at the key that takes one.
    """
    if not isinstance(value, str):
        return value
    if key == "time" or key.endswith("_time"):
        return minutes_from_slurm_time(value, key)
    raise InvalidParameterError(
        f"{key}={value!r}: {key} is minutes as a number; Slurm's time strings ({TIME_FORMATS}) "
        "go in slurm_time (or time with SlurmExecutor)"
    )


def check_slurm_memory(key: str, value: Any) -> Any:
    """A memory size as ``sbatch --mem`` reads it: ``4G``, ``500M``, ``40GB``, or an int of MB.

    The value is kept as given (the script shows what the user wrote);
    only its form is checked.

    Raises:
        InvalidParameterError: a form sbatch refuses (``1.5G``, ``4GiB``, ``-1G``...).
    """
    if isinstance(value, bool):
        raise InvalidParameterError(f"{key}={value!r}: a memory size is an int of MB or a string such as '4G'")
    if isinstance(value, int):
        if value < 0:
            raise InvalidParameterError(f"{key}={value}: a memory size cannot be negative")
        return value
    if isinstance(value, str):
        if _MEMORY.match(value.strip()) is None:
            raise InvalidParameterError(
                f"{key}={value!r} is not a Slurm memory size: a whole number with an optional unit "
                "K, M, G or T (e.g. '4G', '500M', '40GB'); a bare number is MB"
            )
        return value.strip()
    return value  # other types: the type check that follows names what is expected
