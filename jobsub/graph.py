"""``jobsub.graph(jobs)``: the dependency graph of jobs, with their states, to read or to draw.

::

    g = jobsub.graph([total])       # total, and every job it takes as an argument, transitively
    print(g)                        # one line per job: id, function, state (and why), its upstreams
    g.mermaid()                     # a Mermaid flowchart (GitHub, JupyterLab and many wikis draw it)
    g                               # in a notebook: a table coloured by state

The edges come from the folders (``meta.json``'s ``waits_for``), not from this
process's memory, so the graph of jobs re-attached in a new process is the
same; the states come from the shared pollers (one backend call per backend).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .job import Job
from .states import JobState

__all__ = ["JobGraph", "graph"]

_COLOURS = {
    "COMPLETED": "#c8e6c9", "RUNNING": "#bbdefb", "PENDING": "#eeeeee", "QUEUED": "#eeeeee", "HELD": "#fff9c4", "REQUEUED": "#e1bee7",
    "UNKNOWN": "#eeeeee",
}
_FAILED_COLOUR = "#ffcdd2"
GONE = "its folder is gone"
"""How a graph names an upstream whose job folder was deleted (the edge stays)."""


@dataclass
class Node:
    """One job of the graph."""

    job: Job[Any]
    function: str
    state: JobState
    reason: str
    upstream: list[str] = field(default_factory=list)
    """The ids of the jobs it takes as arguments."""


class JobGraph:
    """Jobs and the jobs they take as arguments; ``nodes`` in an order where upstreams come first."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(upstream id, downstream id) pairs."""
        return [(up, node.job.job_id) for node in self.nodes for up in node.upstream]

    def text(self) -> str:
        """One line per job: ``id  function  STATE (reason)  <- upstreams``."""
        width = max((len(n.job.job_id) for n in self.nodes), default=0)
        fwidth = max((len(n.function) for n in self.nodes), default=0)
        lines = []
        for node in self.nodes:
            state = f"{node.state}" + (f" ({node.reason})" if node.reason and node.state is not JobState.COMPLETED else "")
            arrow = f"  <- {', '.join(node.upstream)}" if node.upstream else ""
            lines.append(f"{node.job.job_id:<{width}}  {node.function:<{fwidth}}  {state}{arrow}")
        return "\n".join(lines)

    def mermaid(self) -> str:
        """A Mermaid ``flowchart``: one box per job (function, id, state), coloured by state."""
        ids = {node.job.job_id: f"j{i}" for i, node in enumerate(self.nodes)}
        lines = ["flowchart LR"]
        for node in self.nodes:
            label = f"{node.function}<br/>{node.job.job_id}<br/>{node.state}".replace('"', "#quot;")
            lines.append(f'    {ids[node.job.job_id]}["{label}"]:::{node.state.value.lower()}')
        for up, down in self.edges:
            if up not in ids:  # an upstream whose folder is gone: a box of its own, no job behind it
                ids[up] = f"j{len(ids)}"
                lines.append(f'    {ids[up]}["{up}"]:::lost')
            lines.append(f"    {ids[up]} --> {ids[down]}")
        for state in JobState:
            colour = _COLOURS.get(state.value, _FAILED_COLOUR)
            lines.append(f"    classDef {state.value.lower()} fill:{colour},stroke:#555")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self.mermaid()}\n```"

    def _repr_html_(self) -> str:
        rows = []
        for node in self.nodes:
            colour = _COLOURS.get(node.state.value, _FAILED_COLOUR)
            cells = [node.job.job_id, node.function, str(node.state), node.reason, ", ".join(node.upstream)]
            tds = "".join(
                f'<td style="background:{colour}">{html.escape(c)}</td>' if i == 2 else f"<td>{html.escape(c)}</td>"
                for i, c in enumerate(cells)
            )
            rows.append(f"<tr>{tds}</tr>")
        head = "".join(f"<th>{h}</th>" for h in ("job", "function", "state", "reason", "waits for"))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"JobGraph({len(self.nodes)} jobs, {len(self.edges)} edges)"


def graph(jobs: Job[Any] | Iterable[Job[Any]]) -> JobGraph:
    """The graph of ``jobs`` and of every job they take as arguments, transitively, with their states."""
    todo = [jobs] if isinstance(jobs, Job) else list(jobs)
    known: dict[tuple[str, int], Job[Any]] = {}
    metas: dict[str, dict[str, Any]] = {}
    upstream: dict[tuple[str, int], list[tuple[str, int]]] = {}
    gone: dict[tuple[str, int], str] = {}
    while todo:
        job = todo.pop()
        where = (job.folder.url, job.index)
        if where in known:
            continue
        known[where] = job
        meta = metas.get(job.folder.url)
        if meta is None:
            try:
                meta = metas[job.folder.url] = job.folder.read_meta()
            except (FileNotFoundError, ValueError):
                meta = metas[job.folder.url] = {}
        refs = job.folder.waits_for(meta).get(job.index, [])
        upstream[where] = [(url, index) for url, index, _ranks in refs]
        for url, index in upstream[where]:
            if (url, index) not in known and (url, index) not in gone:
                try:
                    todo.append(Job.at(url, index))
                except (FileNotFoundError, ValueError):  # the edge stays: the upstream is named by its folder
                    gone[(url, index)] = f"{url.rstrip('/').rpartition('/')[2]}#{index} ({GONE})"
    nodes: dict[tuple[str, int], Node] = {}
    for where in _upstream_first(list(known), upstream):
        job = known[where]
        status = job.status()
        state, reason = status.state, status.reason
        ups = [known[u].job_id if u in known else gone[u] for u in upstream.get(where, []) if u in known or u in gone]
        function = str(metas.get(where[0], {}).get("function", "?"))
        nodes[where] = Node(job, function, state, reason, ups)
    return JobGraph(list(nodes.values()))


def _upstream_first(keys: list[tuple[str, int]], upstream: dict[tuple[str, int], list[tuple[str, int]]]) -> list[tuple[str, int]]:
    """A topological order (upstreams before their dependents), stable for the rest."""
    order: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for key in sorted(keys):
        stack = [(key, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            stack.extend((u, False) for u in reversed(upstream.get(node, [])) if u not in seen and u in upstream)
    return order
