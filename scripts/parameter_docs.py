"""The parameter tables of the docs, generated from the code's Parameters dataclasses.

    python scripts/parameter_docs.py          # rewrite the tables in docs/backends/*.md
    python scripts/parameter_docs.py --check  # fail when a table is stale (scripts/check_docs.py runs it)

A page holds ``<!-- parameters: NAME -->`` ... ``<!-- /parameters -->``; NAME is
``common`` or a backend.  Each key comes with its type, default and the
docstring written under its field, so a key added to the code appears in the
docs at the next run, and the check fails until it does.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobsub.backends.base import BackendError, known_backends, load_backend_class  # noqa: E402
from jobsub.parameters import CommonParameters, NoParameters, _type_name, field_types  # noqa: E402

MARK = re.compile(r"(<!-- parameters: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /parameters -->)", re.S)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and its bases (attribute docstrings, read from source)."""
    docs: dict[str, str] = {}
    for owner in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):  # a subclass's words win
        tree = ast.parse(textwrap.dedent(inspect.getsource(owner)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, [*body[1:], None], strict=True):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr):
                value = after.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    docs[node.target.id] = " ".join(inspect.cleandoc(value.value).split())
    return docs


def parameters_class(name: str) -> type | None:
    if name == "common":
        return CommonParameters
    try:
        cls = load_backend_class(name)
    except BackendError:
        return None
    params: type = cls.Parameters
    return None if params is NoParameters else params


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{f.default_factory()!r}`"
    return "required"


def table(name: str) -> str:
    """The Markdown table of ``name``'s keys (as ``AutoExecutor`` takes them: prefixed for a backend)."""
    cls = parameters_class(name)
    if cls is None:
        return "This backend has no keys of its own: the [common keys](index.md#common-keys) apply.\n"
    prefix = "" if name == "common" else f"{name}_"
    docs = field_docs(cls)
    types = field_types(cls)
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        what = docs.get(f.name) or (f"sbatch `--{f.name.replace('_', '-')}`" if name == "slurm" else "")
        what = what.replace("|", "\\|")
        kind = _type_name(types[f.name]).replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | `{kind}` | {_default(f)} | {what} |")
    return "\n".join(rows) + "\n"


def jobsub_backends() -> list[str]:
    """The backends jobsub ships (not a plugin or a test's toy registered in this process)."""
    shipped = []
    for name in known_backends():
        try:
            module = load_backend_class(name).__module__
        except BackendError:
            module = "jobsub."  # shipped, its extra not installed here: still documented
        if module.startswith("jobsub."):
            shipped.append(name)
    return shipped


def undocumented() -> list[str]:
    """Keys of any backend (or common) whose table row says nothing."""
    missing = []
    for name in ["common", *jobsub_backends()]:
        for row in table(name).splitlines()[2:]:
            if row.endswith("|  |"):
                missing.append(row.split("|")[1].strip().strip("`"))
    return missing


def render(text: str) -> str:
    return MARK.sub(lambda m: m.group(1) + "\n" + table(m["name"]) + "\n" + m.group(4), text)


def main(argv: list[str]) -> int:
    stale = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        new = render(text)
        if new != text:
            if "--check" in argv:
                stale.append(str(page.relative_to(ROOT)))
            else:
                page.write_text(new)
    if stale:
        print(f"stale parameter tables (run python scripts/parameter_docs.py): {', '.join(stale)}")
        return 1
    pages = "".join(page.read_text() for page in (ROOT / "docs").rglob("*.md"))
    without = [name for name in jobsub_backends() if f"<!-- parameters: {name} -->" not in pages]
    if without:
        print(f"backends without a parameter table in docs/backends/: {', '.join(without)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
