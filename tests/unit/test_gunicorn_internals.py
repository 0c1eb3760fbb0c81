"""The gunicorn that serve.workers, serve.responses, serve.connection, serve.http_errors and serve.server build on:
the declared range holds the installed and the locked versions, and every gunicorn name the code uses exists in it
(collected from the code itself)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from gunicorn.config import Config
from packaging.requirements import Requirement

from tests.conftest import ROOT

MODULES = [ROOT / "serve" / name for name in ("workers.py", "responses.py", "connection.py", "http_errors.py",
                                              "server.py")]


def declared() -> Requirement:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [gunicorn] = [Requirement(line) for line in dependencies if Requirement(line).name == "gunicorn"]
    return gunicorn


def test_the_declared_range_holds_the_installed_and_every_locked_gunicorn():
    requirement = declared()
    assert metadata.version("gunicorn") in requirement.specifier
    [runtime] = [Requirement(line) for line in (ROOT / "containers" / "runtime.in").read_text().splitlines()
                 if line.startswith("gunicorn")]
    assert runtime.specifier == requirement.specifier
    locks = sorted((ROOT / "containers").glob("*/requirements*.lock"))
    assert locks
    for lock in locks:
        [pinned] = re.findall(r"^gunicorn==(\S+)", lock.read_text(), re.M)
        assert pinned in requirement.specifier, lock


def gunicorn_names(tree: ast.Module) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Local names bound to gunicorn objects (name -> dotted path), and every `module.name` pair the code imports
    from gunicorn or reads off a gunicorn module."""
    bound, used = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gunicorn"):
            for alias in node.names:
                used.append((node.module, alias.name))
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            target = bound[node.value.id]
            if inspect.ismodule(resolve(target)):
                used.append((target, node.attr))
    return bound, used


def resolve(dotted: str):
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)


def provided(cls: type) -> set[str]:
    """What a gunicorn class offers its subclasses: its attributes, and those its methods assign to self."""
    names = set(dir(cls))
    for base in cls.__mro__:
        if base.__module__.startswith("gunicorn"):
            names |= {node.attr for node in ast.walk(ast.parse(inspect.getsource(base)))
                      if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                      and isinstance(node.value, ast.Name) and node.value.id == "self"}
    return names


def own_names(cls: ast.ClassDef) -> set[str]:
    return {node.name for node in cls.body if isinstance(node, ast.FunctionDef)} | {
        target.id for node in cls.body if isinstance(node, ast.Assign) for target in node.targets
        if isinstance(target, ast.Name)} | {
        node.attr for node in ast.walk(cls) if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name) and node.value.id == "self"}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_every_gunicorn_name_the_runtime_uses_exists(path):
    tree = ast.parse(path.read_text())
    bound, used = gunicorn_names(tree)
    for module, name in used:
        assert hasattr(importlib.import_module(module), name), f"gunicorn lost {module}.{name}"
    config = Config()
    classes = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    for node in classes.values():
        chain, gunicorn_base = [node], None
        while gunicorn_base is None and chain[-1].bases:  # up our own classes to the gunicorn one they extend
            base = chain[-1].bases[0]
            if isinstance(base, ast.Name) and base.id in classes:
                chain.append(classes[base.id])
            elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id in bound:
                gunicorn_base = f"{bound[base.value.id]}.{base.attr}"  # wsgi.Response
                break
            else:
                gunicorn_base = bound.get(getattr(base, "id", None))
                break
        if gunicorn_base is None:
            continue
        ours = set().union(*map(own_names, chain))
        offered = provided(resolve(gunicorn_base))
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                assert sub.attr in ours | offered, f"{node.name} uses self.{sub.attr}, which {gunicorn_base} lacks"
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute)
                    and sub.value.attr == "cfg"):
                assert hasattr(config, sub.attr), f"gunicorn has no setting {sub.attr}"


def test_the_response_methods_the_workers_call_exist():
    from gunicorn.http.wsgi import Response, create

    assert "response_class" in inspect.signature(create).parameters  # how the workers pass serve.responses'

    tree = ast.parse(MODULES[0].read_text())
    called = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Name) and node.value.id == "response"}
    assert called >= {"force_close", "write", "close", "should_close", "headers_sent"}
    assert called <= provided(Response)


def test_every_option_the_server_sets_is_a_gunicorn_setting():
    from serve.server import gunicorn_options
    from serve.settings import Settings

    settings = Config().settings
    for layout in (Settings(), Settings(multi_model=True), Settings(threads=4)):
        assert set(gunicorn_options(layout)) <= set(settings)
