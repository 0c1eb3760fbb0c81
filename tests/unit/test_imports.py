"""The runtime's import structure: serve/ reaches a model family only through the table in serve.families, no family
imports another, no module imports one that imports it back (directly or around a longer cycle, at the top of the
module or inside a function), and the benchmarks import nothing from the tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from serve import families
from serve.handler import Handler
from serve.settings import FamilySettings

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("serve", "models")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(*folders: str) -> dict[str, Path]:
    return {module_name(path): path for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))}


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Every name an import statement in the file names, wherever the statement is: `from a.b import c` gives a.b
    and a.b.c (c may be a module)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules among `files` it imports."""
    return {name: {other for other in imported_names(path) if other in files and other != name}
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def family_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "models" and len(parts) > 1 else None


GRAPH = import_graph(python_files(*RUNTIME))


def test_the_graph_sees_top_level_function_level_and_relative_imports(tmp_path):
    assert {"serve.pipeline", "serve.settings", "serve.errors"} <= GRAPH["serve.app"]
    assert "serve.loading" in GRAPH["serve.server"]  # imported inside build_app
    assert "models.xgboost.fast_predict" in GRAPH["models.xgboost.handler"]  # from models.xgboost import fast_predict
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "relative.py").write_text("def f():\n    from .codecs import ANY\n")
    assert "serve.codecs" in imported_names(tmp_path / "serve" / "relative.py", root=tmp_path)


def test_no_import_cycles_among_the_runtimes_modules():
    assert cycles(GRAPH) == []


def test_runtime_imports_no_model_family():
    offenders = {module: sorted(other for other in imports if other.startswith("models"))
                 for module, imports in GRAPH.items() if module.startswith("serve")}
    assert {module: found for module, found in offenders.items() if found} == {}


def test_model_families_import_no_other_family():
    offenders = {module: sorted(other for other in imports if family_of(other) not in (None, family_of(module)))
                 for module, imports in GRAPH.items() if family_of(module)}
    assert {module: found for module, found in offenders.items() if found} == {}


def test_runtime_settings_name_no_model_family():
    source = (ROOT / "serve" / "settings.py").read_text()
    assert [name for name in families.FAMILIES if re.search(rf"\b{name}\b", source, re.IGNORECASE)] == []


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_every_family_in_the_table_resolves(name):
    family = families.FAMILIES[name]
    assert issubclass(families.load(family.handler), Handler)
    assert issubclass(families.load(family.settings), FamilySettings)
    assert family_of(family.handler.partition(":")[0]) == family_of(family.settings.partition(":")[0])


def test_benchmarks_import_nothing_from_the_tests_nor_patch_the_path():
    files = python_files("bench")
    assert files, "no benchmark modules found"
    from_tests = {name: sorted(n for n in imported_names(path) if n == "tests" or n.startswith("tests."))
                  for name, path in files.items()}
    assert {name: found for name, found in from_tests.items() if found} == {}
    assert [name for name, path in files.items() if "sys.path" in path.read_text()] == []
