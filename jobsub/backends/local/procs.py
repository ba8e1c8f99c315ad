"""Processes on this machine, read from /proc: is it still the one we started, how much memory.

A pid alone is not an identity: once a process ends its pid may be given to
another. A task's run record keeps each pid with its start time (jiffies
since boot, ``/proc/<pid>/stat`` field 22), and only a process with both is
taken for the task's: nothing kills or waits on a stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["alive", "kill_group", "rss_by_process_group", "start_time"]


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()  # the command name may hold spaces and parentheses


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, started: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, given ``started``, is the process that started then."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == b"Z":
        return False
    return started is None or int(fields[19]) == started


def kill_group(pid: int, sig: int = signal.SIGTERM, started: int | None = None) -> None:
    """Signal the process group ``pid`` leads, if it is still the one that started at ``started``."""
    if started is not None and not alive(pid, started):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def rss_by_process_group(groups: set[int]) -> dict[int, int]:
    """Resident bytes of every process in ``groups``, summed per group (one pass over /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    totals = dict.fromkeys(groups, 0)
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:  # not Linux: nothing to measure with
        return totals
    for name in entries:
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:  # it ended meanwhile
            continue
        group = int(fields[2])
        if group in totals:
            totals[group] += int(fields[21]) * page
    return totals
