"""The model interface, and the one table that maps SERVE_HANDLER to a model family.

A handler is built from Settings (it never reads the environment), loads its model once, before any request, and
serves requests through the four hooks of AWS's inference toolkit, so a user's `inference.py` can replace any of them:

    model_fn(model_dir) -> model
    input_fn(body, request) -> data          # decoders[request.content_type]
    predict_fn(data, model, request) -> output
    output_fn(output, request) -> bytes      # encoders[request.accept]

`decoders` and `encoders` say which media types the handler takes and gives; the app picks both before predicting.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from serve import codecs
from serve.errors import ModelLoadError
from serve.settings import Settings

HANDLERS = {
    "xgboost": "models.xgboost.handler:XGBoostHandler",
    "pat": "models.pat.handler:PatHandler",
}


@dataclass(frozen=True)
class Request:
    """What a handler may know about one invocation, besides its body."""

    content_type: str
    accept: str
    params: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    content_type_header: str = ""
    accept_header: str = ""


class Handler:
    decoders: Mapping[str, codecs.Decoder] = codecs.DECODERS
    encoders: Mapping[str, codecs.Encoder] = codecs.ENCODERS
    default_accept: str = codecs.JSON

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model: Any = None
        self.ready = False

    def load(self, model_dir: Path) -> None:
        """Load the model; raise ModelLoadError with a clear message when the artifact cannot be served."""
        self.model = self.model_fn(Path(model_dir))
        self.warm_up()
        self.ready = True

    def warm_up(self) -> None:
        """Run once after loading so that the first request is not slow."""

    def describe(self) -> dict:
        """Facts about the loaded model for logs and the multi-model API (no patient data)."""
        return {}

    def model_fn(self, model_dir: Path) -> Any:
        raise NotImplementedError

    def adopt(self, model: Any) -> Any:
        """A model from a user's model_fn, in the form this handler's predict_fn serves (called once, at load)."""
        return model

    def input_fn(self, body: bytes, request: Request) -> Any:
        return self.decoders[request.content_type](body, request.params)

    def predict_fn(self, data: Any, model: Any, request: Request) -> Any:
        raise NotImplementedError

    def output_fn(self, output: Any, request: Request) -> bytes:
        return self.encoders[request.accept](output)

    def accept_default(self) -> str:
        return self.settings.default_accept or self.default_accept

    def close(self) -> None:
        """Release what load took (threads, devices)."""


def handler_class(name: str) -> type[Handler]:
    module_name, _, class_name = HANDLERS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_handler(settings: Settings, model_dir: Path | None = None) -> Handler:
    """The handler SERVE_HANDLER names, with a user's inference.py hooks when the model dir has one, loaded."""
    from serve.user_hooks import own_modules, with_user_hooks

    model_dir = Path(model_dir or settings.model_dir)
    with own_modules(model_dir):
        handler = with_user_hooks(handler_class(settings.handler)(settings), model_dir, settings.program)
        default = handler.accept_default()
        if default not in handler.encoders and "*/*" not in handler.encoders:
            raise ModelLoadError(f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={default} is not a type this model answers; "
                                 f"choose one of {', '.join(handler.encoders)}")
        handler.load(model_dir)
    return handler
