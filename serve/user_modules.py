"""A model's `code/` directory as a private module namespace: its script and helper modules are imported without
changing the process's sys.path or sys.modules, so that loading a model never disturbs threads serving others.

Each module of code/ runs with builtins of its own whose `__import__` takes the names code/ provides (its modules, packages
and extensions, the standard library's names excepted) from the model's namespace, and every other name from Python's
import system as usual. `import helper`, `from helper import x`, `import pkg.sub`, `from . import x` inside a package of
code/, and `importlib.import_module("helper")` then work as in a program with code/ on its path, also when they run
later inside functions, in request threads. Two models whose code/ both has a helper.py each get their own, and the
runtime's modules keep their names (a helper may be called settings.py or models.py).

Limits: what finds a module by name in sys.modules does not see code/'s modules. pickle (and joblib) cannot pickle or
unpickle instances of classes defined in code/, importlib.reload and pkgutil do not know them, and
`sys.modules[__name__]` fails inside them. A user module that edits sys.path itself imports through it what code/ does
not provide. A C extension in code/ with single-phase initialisation is put in sys.modules by the interpreter itself.
One module of a namespace runs its top level at a time (a lock per namespace, not per module): a module whose top
level waits for another thread importing a module of the same code/ not yet imported waits for ever.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.machinery as machinery
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

LOADERS = [(machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
           (machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES),
           (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES)]


def provided_names(code_dir: Path) -> set[str]:
    """The top-level module names a code/ directory provides (its module files and directories), other than the
    standard library's: those stay Python's, as in any program."""
    suffixes = tuple(machinery.all_suffixes())
    names = {path.name.partition(".")[0] if path.is_file() else path.name for path in code_dir.iterdir()
             if path.is_dir() or path.name.endswith(suffixes)}
    return {name for name in names if name.isidentifier()} - set(sys.stdlib_module_names) - {"__pycache__"}


class UserModules:
    """The modules of one model's code/, by name, imported on first use."""

    def __init__(self, code_dir: Path):
        self.code_dir = code_dir
        self.provided = provided_names(code_dir)
        self.modules: dict[str, ModuleType] = {}  # imported completely
        self._initialising: dict[str, ModuleType] = {}  # running their top level (in the thread holding the lock)
        self._lock = threading.RLock()
        self.builtins = {**vars(builtins), "__import__": self.__import__}
        self.importlib = ModuleType("importlib", importlib.__doc__)  # the importlib that code/ sees
        vars(self.importlib).update(import_module=self.import_module, __getattr__=lambda name: getattr(importlib, name))

    def run_script(self, script: Path) -> ModuleType:
        """Import the model's script (a file of code/) under its own name, as code/'s other modules see it."""
        spec = importlib.util.spec_from_file_location(script.stem, script)
        with self._lock:
            return self._execute(spec, script.stem)

    def import_module(self, name: str, package: str | None = None) -> ModuleType:
        """importlib.import_module for code/: its modules from the namespace, the others from Python's."""
        absolute = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        if absolute.partition(".")[0] not in self.provided:
            return importlib.import_module(name, package)
        return self._import(absolute)

    def __import__(self, name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002 - the builtin's signature
        absolute = _absolute(name, globals, level) if level else name
        if absolute.partition(".")[0] not in self.provided:
            module = builtins.__import__(name, globals, locals, fromlist, level)
            return self.importlib if module is importlib else module
        module = self._import(absolute)
        if fromlist:
            self._import_submodules(module, fromlist)
            return module
        if level == 0:
            return self._imported(absolute.partition(".")[0])
        cut = len(name) - len(name.partition(".")[0])  # a relative __import__ without fromlist, as importlib answers it
        return self._imported(absolute[:len(absolute) - cut])

    def _imported(self, name: str) -> ModuleType:
        """A module imported by now: complete, or running its top level in this thread (which imports itself)."""
        return self.modules.get(name) or self._initialising[name]

    def _import_submodules(self, package: ModuleType, fromlist) -> None:
        """`from package import name`: name may be a submodule not imported yet, as importlib's _handle_fromlist."""
        if not hasattr(package, "__path__"):
            return
        names = list(fromlist)
        if "*" in names:
            names = [name for name in names if name != "*"] + list(getattr(package, "__all__", ()))
        for name in names:
            if not hasattr(package, name):
                try:
                    self._import(f"{package.__name__}.{name}")
                except ModuleNotFoundError as error:
                    if error.name != f"{package.__name__}.{name}":
                        raise  # the submodule exists and itself failed to import something

    def _import(self, name: str) -> ModuleType:
        module = self.modules.get(name)
        if module is not None:
            return module
        with self._lock:
            module = self.modules.get(name) or self._initialising.get(name)  # the latter: a circular import
            if module is not None:
                return module
            parent, _, child = name.rpartition(".")
            if parent:
                package = self._import(parent)
                if not hasattr(package, "__path__"):
                    raise ModuleNotFoundError(f"No module named {name!r}; {parent!r} is not a package", name=name)
                search = list(package.__path__)
            else:
                search = [str(self.code_dir)]
            spec = _find(name, search)
            if spec is None:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            module = self._execute(spec, name)
            if parent:
                setattr(package, child, module)
            return module

    def _execute(self, spec: machinery.ModuleSpec, name: str) -> ModuleType:
        """Create and run a module (the lock is held); it is visible to its own circular imports while it runs."""
        module = importlib.util.module_from_spec(spec)
        module.__builtins__ = self.builtins
        self._initialising[name] = module
        try:
            if spec.loader is not None:
                spec.loader.exec_module(module)
        finally:
            del self._initialising[name]
        self.modules[name] = module
        return module


def _absolute(name: str, globals: dict | None, level: int) -> str:
    package = (globals or {}).get("__package__")
    if not package:
        spec = (globals or {}).get("__spec__")
        package = spec.parent if spec is not None else None
    if not package:
        raise ImportError("attempted relative import with no known parent package")
    return importlib.util.resolve_name("." * level + name, package)


def _find(name: str, search: list[str]) -> machinery.ModuleSpec | None:
    """The spec of `name` in the directories `search` (code/ or a package's), as Python's path finder would give it,
    without its caches: a module, a package, or a namespace package spanning the directories."""
    portions = []
    for directory in search:
        spec = machinery.FileFinder(directory, *LOADERS).find_spec(name)
        if spec is None:
            continue
        if spec.loader is not None:
            return spec
        portions.extend(spec.submodule_search_locations or ())
    if not portions:
        return None
    spec = machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = portions
    return spec
