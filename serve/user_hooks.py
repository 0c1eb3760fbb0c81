"""Script mode: a user's `code/inference.py` replaces any of the toolkit's hooks.

Same meaning as AWS's sagemaker-inference toolkit: `model_fn(model_dir)`, `input_fn(input_data, content_type)`,
`predict_fn(data, model)`, `output_fn(prediction, accept)`, or `transform_fn(model, input_data, content_type, accept)`
alone. Hooks the user leaves out are the handler's own. `SAGEMAKER_PROGRAM` names another file under `code/`. The script
and its helper modules live in a namespace of the model's own (serve.user_modules), never in sys.modules.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from serve import codecs
from serve.errors import BadRequest, ModelLoadError, ServeError
from serve.handler import Handler
from serve.memory import object_bytes
from serve.pipeline import Output, Request
from serve.user_modules import UserModules

HOOKS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
EVERY_TYPE = {codecs.ANY: None}  # the user's hook decodes (encodes) whatever type comes (is asked for)


def find_script(model_dir: Path, program: str | None) -> Path | None:
    script = model_dir / "code" / (program or "inference.py")
    if script.is_file():
        return script
    if program:
        raise ModelLoadError(f"SAGEMAKER_PROGRAM={program} but {script} does not exist")
    return None


def import_script(script: Path, modules: UserModules) -> ModuleType:
    """Import a user's script, and the helpers it imports from code/, into the model's own namespace: the process's
    sys.path and sys.modules stay as they are (serve.user_modules)."""
    try:
        return modules.run_script(script)
    except Exception as error:
        raise ModelLoadError(f"{script} failed to import: {type(error).__name__}: {error}") from error


class ScriptHandler(Handler):
    """A handler whose hooks come from a user's module where it defines them."""

    def __init__(self, inner: Handler, module: ModuleType, modules: UserModules):
        super().__init__(inner.settings)
        self.inner = inner
        self.modules = modules
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

    def warm_up_request(self):
        """The handler's when inference.py defines model_fn alone: the request's other hooks are the handler's."""
        return self.inner.warm_up_request() if self.hooks.keys() <= {"model_fn"} else None

    def describe(self) -> dict:
        return {**self.inner.describe(), "script_hooks": sorted(self.hooks)}

    def model_bytes(self) -> int:
        """The model and what the modules of its code/ keep at their top level (a table a helper loads, say)."""
        roots = [self.model, *(vars(module) for module in self.modules.modules.values())]
        return object_bytes(roots, self.inner.native_bytes)

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
        if "input_fn" not in self.hooks:  # a user's predict_fn gets the decoded body, as in AWS's toolkit
            return self.inner.input_fn(body, request) if self.inner_predicts else self.inner.decode(body, request)
        try:
            return self.hooks["input_fn"](body, request.content_type_header or request.content_type)
        except ServeError:
            raise
        except Exception:
            raise BadRequest("inference.py input_fn could not decode the body") from None

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


def with_user_hooks(handler: Handler, model_dir: Path, program: str | None) -> Handler:
    script = find_script(model_dir, program)
    if script is None:
        return handler
    modules = UserModules(model_dir / "code")
    return ScriptHandler(handler, import_script(script, modules), modules)
