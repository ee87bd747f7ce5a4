"""The project's own import graph, lazy (function-level) imports included, has no cycle; rift_core never imports
dagster; rift_trainer imports with none of polars, math-verify, duckdb or dagster installed."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def module_names(package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of `package` (a package is named by its __init__.py)."""
    names = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports anywhere in its file (module level or inside functions), as dotted names:
    `from x import y` counts as an import of `x.y` when that is a module, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return found


def graph(package: str) -> dict[str, set[str]]:
    """Import edges between the modules of `package` and rift_core (which every package may use)."""
    files = {**module_names("rift_core"), **module_names(package)}
    return {name: imports_of(name, files[name], set(files)) & set(files) - {name}
            for name in module_names(package)}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `edges` as [a, b, ..., a], or None (depth-first search, colouring nodes on the way)."""
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_lazy_submodule_and_relative_imports_are_edges(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from . import sib\nfrom .pkg import thing\n\ndef f():\n    from rift_core import toy_task\n")
    assert imports_of("pkg.sub.m", path, {"rift_core.toy_task", "pkg.sub.sib"}) == {
        "pkg.sub", "pkg.sub.sib", "pkg.sub.pkg", "rift_core", "rift_core.toy_task"}


@pytest.mark.parametrize("package", ["rift_core", "rift_dagster"])
def test_no_import_cycle(package):
    cycle = find_cycle(graph(package))
    assert cycle is None, f"{package} import cycle: {' -> '.join(cycle)}"


def test_rift_core_never_imports_dagster():
    files = module_names("rift_core")
    offenders = {name: sorted(m for m in imports_of(name, path, set(files)) if m.split(".")[0].startswith("dagster"))
                 for name, path in files.items()}
    assert not {k: v for k, v in offenders.items() if v}


def test_rift_trainer_needs_only_torch_transformers_trl_and_datasets():
    blocked = ("polars", "math_verify", "duckdb", "dagster")
    code = ("import sys\n"
            f"for name in {blocked!r}:\n"
            "    sys.modules[name] = None  # an import of it raises ImportError\n"
            "from rift_core.rift_trainer import RIFTConfig, RIFTTrainer\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
