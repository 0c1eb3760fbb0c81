"""The model interface every model family implements (MLServer-like: small, four hooks).

A handler is built from Settings (it never reads the environment), loads its model once, before any request, and
serves requests through the four hooks of AWS's inference toolkit, so a user's `inference.py` can replace any of them
(serve.user_hooks):

    model_fn(model_dir) -> model
    input_fn(body, request) -> data          # decode(): decoders[request.content_type]
    predict_fn(data, model, request) -> output
    output_fn(output, request) -> Output     # encoders[request.accept]

`decoders` and `encoders` say which media types the handler takes and gives; the pipeline (serve.pipeline) picks both
before predicting. serve.loading builds the handler that SERVE_HANDLER names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from serve import codecs
from serve.errors import InsufficientMemory, ModelLoadError
from serve.memory import object_bytes
from serve.pipeline import Output, Request
from serve.settings import Settings

__all__ = ["Handler", "Output", "Request"]


class Handler:
    decoders: Mapping[str, codecs.Decoder] = codecs.DECODERS
    encoders: Mapping[str, codecs.Encoder] = codecs.ENCODERS
    default_accept: str = codecs.JSON

    def __init__(self, settings: Settings):
        self.settings = settings
        self.model: Any = None
        self.ready = False
        self.identity = None  # serve.provenance.Identity: the model's name and version, set once it has loaded

    def load(self, model_dir: Path) -> None:
        """Load the model and warm it up; raise ModelLoadError with a clear message when it cannot be served."""
        self.model = self.model_fn(Path(model_dir))
        try:
            self.warm_up()
        except (ModelLoadError, InsufficientMemory, MemoryError):  # already say why (multi-model: 422, 507)
            self.close()
            raise
        except Exception as error:  # the warm-up's input is synthetic: its message holds no request data
            self.close()
            raise ModelLoadError(f"the model failed its warm-up prediction: {type(error).__name__}: {error}") from error
        self.ready = True

    def warm_up(self) -> None:
        """Run one prediction on a synthetic input the handler builds from the model's shape, after loading and before
        the worker serves, so that the first request does not pay for first-call costs."""

    def warm_up_request(self) -> tuple[str, str, bytes] | None:
        """A synthetic invocation (Content-Type, Accept, body) that each worker sends through the whole app before it
        serves (serve.workers), so that the first request finds the HTTP path warm too; None for none."""
        return None

    def describe(self) -> dict:
        """Facts about the loaded model for logs and the multi-model API (no patient data)."""
        return {}

    def model_bytes(self) -> int:
        """The memory the loaded model keeps (a multi-model budget charges it): its objects, walked from the model, and
        what native_bytes reports beyond them. Measured on the model alone, never as the process's growth while it
        loads, so that what requests allocate meanwhile is not charged to it."""
        return object_bytes([self.model], self.native_bytes)

    def native_bytes(self, obj: Any) -> int:
        """Memory that `obj`, one of the model's objects, holds outside Python's objects (a library's own model),
        which its Python size does not show; 0 for none."""
        return 0

    def model_fn(self, model_dir: Path) -> Any:
        raise NotImplementedError

    def adopt(self, model: Any) -> Any:
        """A model from a user's model_fn, in the form this handler's predict_fn serves (called once, at load)."""
        return model

    def decode(self, body: bytes, request: Request) -> Any:
        """The body as this family decodes it: what a user's predict_fn gets when inference.py has no input_fn."""
        return self.decoders[request.content_type](body, request.params)

    def input_fn(self, body: bytes, request: Request) -> Any:
        """What this handler's own predict_fn takes: `decode`'s data, or the same values in a faster form."""
        return self.decode(body, request)

    def predict_fn(self, data: Any, model: Any, request: Request) -> Any:
        raise NotImplementedError

    def output_fn(self, output: Any, request: Request) -> Output:
        return self.encoders[request.accept](output)

    def accept_default(self) -> str:
        return self.settings.default_accept or self.default_accept

    def close(self) -> None:
        """Release what load took (threads, devices)."""
