"""Slurm's compressed host lists (``SLURM_JOB_NODELIST``) expanded to host names (pure code).

::

    "gpu[01-03,7],login"      -> ["gpu01", "gpu02", "gpu03", "gpu7", "login"]
    "rack[1-2]-n[1-2]"        -> ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]

A multi-node job's first host is where distributed training meets
(``MASTER_ADDR``); tools such as dora read it with this function, under
submitit's name ``_parse_node_list``.
"""

from __future__ import annotations

import re

__all__ = ["NodeListError", "expand_node_list"]

_RANGE = re.compile(r"(\d+)(?:-(\d+))?\Z")


class NodeListError(ValueError):
    """The text is not a Slurm host list."""


def _expand_range(spec: str, text: str) -> list[str]:
    """``"01-03,7"`` -> ``["01", "02", "03", "7"]``: a range keeps the width of its first bound."""
    names: list[str] = []
    for part in spec.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise NodeListError(f"bad range {part!r} in the Slurm host list {text!r}")
        low, high = match.group(1), match.group(2)
        if high is None:
            names.append(low)
            continue
        if int(high) < int(low):
            raise NodeListError(f"range {part!r} goes backwards in the Slurm host list {text!r}")
        names += [str(number).zfill(len(low)) for number in range(int(low), int(high) + 1)]
    return names


def _expand_group(group: str, text: str) -> list[str]:
    """One host pattern (no top-level comma): literal text and ``[...]`` ranges, multiplied out."""
    names = [""]
    rest = group
    while rest:
        opening = rest.find("[")
        if opening < 0:
            literal, rest = rest, ""
            names = [name + literal for name in names]
            continue
        closing = rest.find("]", opening)  # balanced: _split_groups checked
        literal, spec, rest = rest[:opening], rest[opening + 1 : closing], rest[closing + 1 :]
        names = [name + literal + suffix for name in names for suffix in _expand_range(spec, text)]
    return names


def _split_groups(text: str) -> list[str]:
    """Split at the commas that are outside brackets."""
    groups, depth, start = [], 0, 0
    for position, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            groups.append(text[start:position])
            start = position + 1
        if depth not in (0, 1):  # Slurm does not nest brackets
            raise NodeListError(f"unbalanced brackets in the Slurm host list {text!r}")
    if depth:
        raise NodeListError(f"unbalanced brackets in the Slurm host list {text!r}")
    groups.append(text[start:])
    return [group for group in groups if group]


def expand_node_list(text: str) -> list[str]:
    """Every host name of a Slurm host list, in Slurm's order.

    Raises:
        NodeListError: unbalanced brackets or a range that is not ``N`` or ``N-M``.
    """
    hosts: list[str] = []
    for group in _split_groups(text.strip()):
        hosts += _expand_group(group, text)
    return hosts
