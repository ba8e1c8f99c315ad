"""The layers keep to one direction: the ``Job`` future never imports what drives it, nothing
outside ``jobsub/job.py`` touches a ``Job``'s private members, and no import cycle exists in
the package, imports inside functions included (``if TYPE_CHECKING:`` blocks never run and
are left out).  Read from the source with ``ast``: nothing is run but the one interpreter
that checks which modules ``jobsub.Job`` loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jobsub"
ABOVE_THE_FUTURE = ("hold", "cache", "graph", "executor", "cli", "autoarray", "_submitit.aliases", "helpers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, but those under ``if TYPE_CHECKING:`` (for type checkers only; never imported)."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _imports(module: str) -> set[str]:
    """The package's modules ``module`` imports at run time, wherever the import statement is."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                out.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
    return {name for name in out if name in MODULES and name != module}


def test_the_job_future_imports_nothing_that_drives_it() -> None:
    above = {f"jobsub.{name}" for name in ABOVE_THE_FUTURE}
    assert _imports("jobsub.job") & above == set()


def test_no_import_cycle_in_the_package() -> None:
    graph = {module: _imports(module) for module in MODULES}
    # a module's package is loaded before it: an edge to one's own package (the root) is no cycle
    graph = {m: {n for n in deps if not m.startswith(n + ".")} for m, deps in graph.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def _job_private_names() -> set[str]:
    """The private methods, properties and attributes of ``Job`` (``_x``, not ``__x__``)."""
    tree = ast.parse(MODULES["jobsub.job"].read_text())
    job = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Job")
    names = set()
    for node in ast.walk(job):
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
    return {name for name in names if name.startswith("_") and not name.endswith("__")}


def test_nothing_outside_job_py_touches_job_privates() -> None:
    private = _job_private_names()
    assert {"_held", "_status", "_backend", "_released", "_seen_state"} <= private  # the scan sees them
    touched = []
    for module, path in MODULES.items():
        if module == "jobsub.job":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute) and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                touched.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert touched == []


@pytest.mark.parametrize("entry", ["jobsub.Job", "jobsub.cli", "jobsub.executor", "jobsub.core.core"])
def test_what_hands_out_jobs_loads_the_driver_of_held_ones(entry: str) -> None:
    """A held handle is released by ``jobsub.hold``, which registers itself when loaded; every
    way to a ``Job`` but the bare module ``jobsub.job`` loads it."""
    module, _, name = entry.partition(".")
    code = f"import sys, {entry if name != 'Job' else module}; "
    code += f"{entry}; " if name == "Job" else ""
    code += "print('jobsub.hold' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_the_top_level_shows_jobsubs_own_layers() -> None:
    """submitit's module tree lives in jobsub/_submitit/, not beside jobsub's own modules."""
    # helpers.py stays: submitit's public helpers (Checkpointable, as_completed) are jobsub's too, and a
    # real module is what type checkers find for `from jobsub.helpers import Checkpointable`
    mirrored = {"core", "auto", "local", "slurm", "aliases", "watcher", "submitit_alias"}
    top = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert top & mirrored == set()
    assert {p.name for p in (PACKAGE / "_submitit").iterdir() if p.suffix == ".py" or p.is_dir()} >= {
        "core", "auto", "local", "slurm", "aliases.py", "watcher.py", "submitit_alias.py",
    }


def test_submitits_module_paths_are_the_mirrors_themselves() -> None:
    """Every path the alias maps (``jobsub.core.utils``, ``jobsub.slurm.slurm``...) imports, in a fresh
    interpreter, as the very module of jobsub/_submitit/ (one object, two names); ``jobsub.helpers``
    is a real module of the top level."""
    from jobsub._submitit.submitit_alias import MODULES

    paths = [m for m in [*MODULES, "aliases", "watcher", "submitit_alias"] if m != "helpers"]
    code = (
        "import importlib, sys\n"
        f"for path in {paths!r}:\n"
        "    old = importlib.import_module('jobsub.' + path)\n"
        "    assert old is sys.modules['jobsub._submitit.' + path], path\n"
        "from jobsub.slurm.slurm import _parse_node_list\n"
        "import jobsub.core.utils, jobsub\n"
        "assert _parse_node_list('n[1-2]') == ['n1', 'n2'] and jobsub.core.utils.FailedJobError is jobsub.FailedJobError\n"
        "assert jobsub.helpers.Checkpointable is sys.modules['jobsub.helpers'].Checkpointable\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr
