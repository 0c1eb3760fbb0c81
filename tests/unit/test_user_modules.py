"""A model's code/ is imported into a namespace of its own: the process's sys.path and sys.modules never change, not
even for a moment while a model loads beside threads that serve and import, and models whose helpers share names each
get their own."""

from __future__ import annotations

import importlib
import queue
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serve.handler import Request
from serve.multimodel import ModelRegistry
from serve.settings import Settings
from serve.user_modules import UserModules
from tests.conftest import FEATURES
from tests.http.test_multimodel_api import make_model

ROWS = np.zeros((2, len(FEATURES)))
CSV = Request(content_type="text/csv", accept="text/csv")
RUNTIME_HELPER = "VALUE = 'runtime'\n"

# A model's script: it checks the process's import state while it loads (during_load), imports helpers that every
# model has under the same names (a module and a package with a relative import), and imports them again, lazily, in
# predict_fn, which runs in request threads.
SCRIPT = """
from tests.unit.test_user_modules import during_load
during_load()

import numpy as np
import helper
from tools import scaled
import tools.scale


def predict_fn(data, model):
    import helper as again
    from tools.scale import FACTOR
    import lazy
    assert again is helper and FACTOR == tools.scale.FACTOR
    return np.full(len(data), scaled(helper.VALUE) + lazy.OFFSET)
"""
TOOLS = {"__init__.py": "from .scale import scale as scaled\n",
         "scale.py": "FACTOR = {factor}\ndef scale(value):\n    return value * FACTOR\n"}
LAZY = "from tests.unit.test_user_modules import LAZY_RUNS\nLAZY_RUNS.append({value})\nOFFSET = 0.5\n"

LAZY_RUNS: list[int] = []  # one entry each time some model's lazy.py runs its top level
_checks: queue.Queue = queue.Queue()  # what during_load asks the importing thread to look at
_seen_during_loads: list[tuple] = []
_before: dict = {}


def during_load() -> None:
    """Called by a script while it is imported: the process's sys.path and sys.modules must be exactly as before, and
    another thread's `import helper` at this very moment must get the runtime's helper."""
    if not _before:
        return  # a load before the test watches
    answer = queue.Queue()
    _checks.put(answer)
    seen_by_other_thread = answer.get(timeout=30)
    _seen_during_loads.append((list(sys.path) == _before["path"], _changes(_before["modules"]), seen_by_other_thread))


def _changes(before: dict) -> list[str]:
    """Entries of sys.modules removed, replaced or coming from a model's code/ since `before`."""
    now = dict(sys.modules)
    changed = [f"removed {name}" for name in before.keys() - now.keys()]
    changed += [f"replaced {name}" for name in before.keys() & now.keys() if now[name] is not before[name]]
    changed += [f"added {name}" for name in now.keys() - before.keys()
                if name.partition(".")[0] in ("helper", "tools", "lazy", "inference")
                or "model" in str(getattr(now[name], "__file__", ""))]
    return changed


def write_code(model_dir: Path, value: float) -> None:
    code = model_dir / "code"
    code.mkdir()
    (code / "inference.py").write_text(SCRIPT)
    (code / "helper.py").write_text(f"VALUE = {value}\n")
    (code / "lazy.py").write_text(LAZY.format(value=value))
    (code / "tools").mkdir()
    for name, text in TOOLS.items():
        (code / "tools" / name).write_text(text.format(factor=value))


@pytest.fixture
def runtime_helper(tmp_path, monkeypatch):
    """A module of the runtime named `helper` as well, imported and on sys.path, as a library's module could be."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "helper.py").write_text(RUNTIME_HELPER)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "helper", raising=False)
    module = importlib.import_module("helper")
    yield module
    sys.modules.pop("helper", None)


def test_models_whose_helpers_share_names_load_beside_threads_that_serve_and_import(tmp_path, runtime_helper):
    values = {f"m{index}": float(index + 2) for index in range(6)}
    for name, value in values.items():
        write_code(make_model(tmp_path, name, index := int(name[1:]), rounds=5), value)
    registries = [ModelRegistry(Settings(multi_model=True, multi_model_dir=tmp_path)) for _ in range(2)]
    expected = {name: value * value + 0.5 for name, value in values.items()}
    LAZY_RUNS.clear()
    _seen_during_loads.clear()
    _before.clear()

    # m0 loads first, in one registry, and serves while the others load.
    serving = _load_answering(registries[0], "m0")
    _before.update(path=list(sys.path), modules=dict(sys.modules))
    done = threading.Event()
    problems: list[str] = []

    def importer() -> None:
        """Another thread importing `helper` at the moment each script loads, and between loads."""
        while not done.is_set():
            try:
                answer = _checks.get(timeout=0.01)
            except queue.Empty:
                answer = None
            module = importlib.import_module("helper")
            if answer is not None:
                answer.put(getattr(module, "VALUE", None))
            elif module is not runtime_helper:
                problems.append(f"another thread's import helper gave {module.__file__}")

    def invoker() -> None:
        while not done.is_set():
            got = _predict(registries[0], "m0")
            if got != [expected["m0"]] * len(ROWS):
                problems.append(f"m0 answered {got}")

    def loader(registry: ModelRegistry, names: list[str]) -> None:
        for name in names:
            registry.load(name, str(tmp_path / name / "model"))

    with ThreadPoolExecutor(5) as pool:
        background = [pool.submit(importer), pool.submit(invoker), pool.submit(invoker)]
        loads = [pool.submit(loader, registries[0], ["m1", "m2", "m3"]), pool.submit(loader, registries[1],
                                                                                      ["m4", "m5", "m1"])]
        try:
            for future in loads:
                future.result(timeout=120)
            with ThreadPoolExecutor(8) as requests:  # first calls of predict_fn, together: lazy.py imports once
                answers = list(requests.map(lambda name: (name, _predict(registries[name in ("m4", "m5")], name)),
                                            [name for name in values if name != "m0"] * 4))
        finally:
            done.set()
            for future in background:
                future.result(timeout=60)
            _before_taken = dict(_before)
            _before.clear()

    assert _seen_during_loads == [(True, [], "runtime")] * 6  # m1 to m5, and m1 again in the other registry
    assert problems == []
    assert {name: got for name, got in answers} == {name: [expected[name]] * len(ROWS) for name in values if name != "m0"}
    assert sorted(LAZY_RUNS) == sorted(values.values())  # once per model, on its first invocation
    assert _predict(registries[1], "m1") == [expected["m1"]] * len(ROWS)  # m1 again, in the other registry: its own
    assert LAZY_RUNS.count(values["m1"]) == 2
    assert list(sys.path) == _before_taken["path"] and _changes(_before_taken["modules"]) == []
    assert sys.modules["helper"] is runtime_helper and runtime_helper.VALUE == "runtime"
    assert serving


def _load_answering(registry: ModelRegistry, name: str) -> bool:
    registry.load(name, str(registry.root / name / "model"))
    return _predict(registry, name) is not None


def _predict(registry: ModelRegistry, name: str) -> list[float]:
    with registry.lease(name) as handler:
        return handler.predict_fn(ROWS, handler.model, CSV).tolist()


def code(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "code"
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def test_the_import_forms_of_a_program_with_code_on_its_path(tmp_path):
    directory = code(tmp_path, {
        "inference.py": """
            import importlib
            from importlib import import_module
            import helper, pkg.sub as sub, space.part, cycle_a
            from pkg import sibling
            from pkg.deep import *
            import inference

            helper_again = importlib.import_module("helper")
            sub_again = import_module(".sub", "pkg")
            util = importlib.util.resolve_name(".x", "pkg")
            myself = inference
        """,
        "helper.py": "VALUE = 1\n",
        "pkg/__init__.py": "from . import sub\nfrom .sub import NAME\n",
        "pkg/sub.py": "import helper\nNAME = 'sub'\nHELPER = helper\n",
        "pkg/sibling.py": "from .sub import NAME as OTHER\n",
        "pkg/deep/__init__.py": "__all__ = ['leaf']\n",
        "pkg/deep/leaf.py": "from .. import sub\nLEAF = sub.NAME == 'sub'\n",
        "space/part.py": "PART = 'namespace package'\n",
        "cycle_a.py": "import cycle_b\nA = 'a'\n",
        "cycle_b.py": "import cycle_a\ndef other():\n    return cycle_a.A\n",
    })
    before_path, before_modules = list(sys.path), dict(sys.modules)
    modules = UserModules(directory)
    script = modules.run_script(directory / "inference.py")
    assert script.helper_again is script.helper is script.sub.HELPER and script.helper.VALUE == 1
    assert script.sub is script.sub_again is modules.modules["pkg.sub"] and modules.modules["pkg"].NAME == "sub"
    assert script.sibling.OTHER == "sub" and script.leaf.LEAF and script.space.part.PART == "namespace package"
    assert script.cycle_a.cycle_b.other() == "a" and script.util == "pkg.x" and script.myself is script
    assert list(sys.path) == before_path and dict(sys.modules) == before_modules


def test_failures_read_as_python_s_own(tmp_path):
    directory = code(tmp_path, {"pkg/__init__.py": "", "plain.py": "", "broken.py": "import not_a_module_anywhere\n",
                                "pkg/above.py": "from .. import plain\n"})
    modules = UserModules(directory)
    with pytest.raises(ModuleNotFoundError, match="'pkg.missing'"):
        modules.import_module("pkg.missing")
    with pytest.raises(ModuleNotFoundError, match="'plain' is not a package"):
        modules.import_module("plain.inner")
    with pytest.raises(ModuleNotFoundError, match="not_a_module_anywhere"):
        modules.import_module("broken")
    assert "broken" not in modules.modules  # a failed import leaves nothing behind, as in sys.modules
    with pytest.raises(ImportError, match="beyond top-level package"):
        modules.import_module("pkg.above")
    with pytest.raises(ImportError, match="no known parent package"):
        modules.__import__("x", {"__name__": "plain", "__package__": ""}, None, (), 1)
    assert modules.import_module("json") is sys.modules["json"]  # the standard library's names stay Python's
