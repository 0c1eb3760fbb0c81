"""Script mode: a user's `code/inference.py` replaces any of the toolkit's hooks.

Same meaning as AWS's sagemaker-inference toolkit: `model_fn(model_dir)`, `input_fn(input_data, content_type)`,
`predict_fn(data, model)`, `output_fn(prediction, accept)`, or `transform_fn(model, input_data, content_type, accept)`
alone. Hooks the user leaves out are the handler's own. `SAGEMAKER_PROGRAM` names another file under `code/`.
"""

from __future__ import annotations

import builtins
import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from serve import codecs
from serve.errors import BadRequest, ModelLoadError, ServeError
from serve.handler import Handler
from serve.pipeline import Output, Request

HOOKS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
EVERY_TYPE = {codecs.ANY: None}  # the user's hook decodes (encodes) whatever type comes (is asked for)


def find_script(model_dir: Path, program: str | None) -> Path | None:
    script = model_dir / "code" / (program or "inference.py")
    if script.is_file():
        return script
    if program:
        raise ModelLoadError(f"SAGEMAKER_PROGRAM={program} but {script} does not exist")
    return None


def import_script(script: Path) -> ModuleType:
    """Import a user's script under a name unique to its path (each multi-model artifact has its own).

    Its helper modules in code/ win inside it whatever they are named, this runtime's own names (`models`, `serve`,
    `settings`...) included: while it is imported, code/ is first on sys.path and the modules of the names code/ holds
    are out of sys.modules; afterwards the runtime's are back, and the script's imports of those names, also inside
    its functions, resolve to the helpers it imported."""
    name = f"user_inference_{abs(hash(str(script.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    helpers: dict[str, ModuleType] = {}
    module.__builtins__ = {**vars(builtins), "__import__": _importer(helpers)}
    try:
        with _code_first(script.parent, helpers):
            spec.loader.exec_module(module)
    except Exception as error:
        raise ModelLoadError(f"{script} failed to import: {type(error).__name__}: {error}") from error
    return module


def _provided(code_dir: Path) -> set[str]:
    """The top-level module names a code/ directory provides (its *.py files and directories), other than the standard
    library's: those stay Python's, as in any program."""
    names = {path.stem if path.suffix == ".py" else path.name for path in code_dir.iterdir()
             if (path.suffix == ".py" or path.is_dir()) and path.stem.isidentifier()}
    return names - set(sys.stdlib_module_names) - {"__pycache__"}


@contextmanager
def _code_first(code_dir: Path, helpers: dict[str, ModuleType]):
    """code/ first on sys.path, and sys.modules without the names it provides, while a script is imported; then the
    helpers it imported go into `helpers` and the runtime's modules come back."""
    provided = _provided(code_dir)

    def shadowed() -> list[str]:
        return [name for name in sys.modules if name.partition(".")[0] in provided]

    runtime = {name: sys.modules.pop(name) for name in shadowed()}
    sys.path.insert(0, str(code_dir))
    try:
        yield
    finally:
        sys.path.remove(str(code_dir))
        helpers.update((name, sys.modules.pop(name)) for name in shadowed())
        sys.modules.update(runtime)


def _importer(helpers: dict[str, ModuleType]):
    """`__import__` for a user's script: its helpers by name, anything else as usual."""

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A001 - the builtin's signature
        if level == 0 and name in helpers:
            return helpers[name] if fromlist else helpers[name.partition(".")[0]]
        return builtins.__import__(name, globals, locals, fromlist, level)

    return __import__


class ScriptHandler(Handler):
    """A handler whose hooks come from a user's module where it defines them."""

    def __init__(self, inner: Handler, module: ModuleType):
        super().__init__(inner.settings)
        self.inner = inner
        self.hooks = {name: getattr(module, name) for name in HOOKS if callable(getattr(module, name, None))}
        if "transform_fn" in self.hooks and len(self.hooks.keys() - {"model_fn", "transform_fn"}):
            raise ModelLoadError("inference.py defines transform_fn together with input_fn/predict_fn/output_fn; "
                                 "define transform_fn alone or the other three")
        whole = "transform_fn" in self.hooks
        self.decoders = EVERY_TYPE if whole or "input_fn" in self.hooks else inner.decoders
        self.encoders = EVERY_TYPE if whole or "output_fn" in self.hooks else inner.encoders
        # AWS's toolkit hands a user's output_fn application/json when the client names no type.
        self.default_accept = codecs.JSON if self.encoders is EVERY_TYPE else inner.default_accept

    @property
    def inner_predicts(self) -> bool:
        return not {"predict_fn", "transform_fn"} & self.hooks.keys()

    def warm_up(self) -> None:
        if self.inner_predicts:  # the handler serves the model: its warm-up applies
            self.inner.model = self.model
            self.inner.warm_up()

    def describe(self) -> dict:
        return {**self.inner.describe(), "script_hooks": sorted(self.hooks)}

    def model_fn(self, model_dir: Path) -> Any:
        if "model_fn" not in self.hooks:
            return self.inner.model_fn(model_dir)
        try:
            model = self.hooks["model_fn"](str(model_dir))
        except Exception as error:
            raise ModelLoadError(f"inference.py model_fn failed: {type(error).__name__}: {error}") from error
        if not self.inner_predicts:
            return model  # the user's predict_fn or transform_fn gets exactly what model_fn returned
        try:
            return self.inner.adopt(model)
        except (TypeError, ValueError) as error:
            raise ModelLoadError(f"inference.py model_fn: {error}") from error

    def input_fn(self, body: bytes, request: Request) -> Any:
        if "transform_fn" in self.hooks:
            return body
        if "input_fn" not in self.hooks:
            return self.inner.input_fn(body, request)
        try:
            return self.hooks["input_fn"](body, request.content_type_header or request.content_type)
        except ServeError:
            raise
        except Exception:
            raise BadRequest(f"inference.py input_fn could not decode the {request.content_type} body") from None

    def predict_fn(self, data: Any, model: Any, request: Request) -> Any:
        if "transform_fn" in self.hooks:
            return self.hooks["transform_fn"](model, data, request.content_type_header or request.content_type,
                                              request.accept)
        if "predict_fn" in self.hooks:
            return self.hooks["predict_fn"](data, model)
        return self.inner.predict_fn(data, model, request)

    def output_fn(self, output: Any, request: Request) -> Output:
        if "transform_fn" in self.hooks:
            return output
        if "output_fn" in self.hooks:
            return self.hooks["output_fn"](output, request.accept)
        return self.inner.output_fn(output, request)

    def close(self) -> None:
        self.inner.close()


@contextmanager
def own_modules(model_dir: Path):
    """Drop from sys.modules what a model's code/ imports besides inference.py (helper modules) once it is loaded: the
    model keeps them, and another model whose code/ has a module of the same name gets its own, not this one."""
    before = set(sys.modules)
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            path = getattr(sys.modules[name], "__file__", None)
            if path and Path(path).resolve().is_relative_to(model_dir.resolve()):
                del sys.modules[name]


def with_user_hooks(handler: Handler, model_dir: Path, program: str | None) -> Handler:
    script = find_script(model_dir, program)
    return ScriptHandler(handler, import_script(script)) if script else handler
