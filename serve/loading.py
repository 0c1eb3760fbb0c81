"""Handler loading: the handler that SERVE_HANDLER names (found through serve.families), with a user's `inference.py`
hooks when the model directory has one (serve.user_hooks), loaded and warmed up; and the warm-up request each worker
then sends through the whole app (serve.workers)."""

from __future__ import annotations

from pathlib import Path

from serve import codecs, families, provenance
from serve.errors import ModelLoadError
from serve.handler import Handler
from serve.settings import Settings
from serve.user_hooks import with_user_hooks

WARM_UP = "serve.warm_up"  # WSGI environ key, True on the warm-up request: no metric or log counts it as an invocation


def handler_class(name: str) -> type[Handler]:
    return families.load(families.FAMILIES[name].handler)


def build_handler(settings: Settings, model_dir: Path | None = None, target: str | None = None) -> Handler:
    """The handler SERVE_HANDLER names, with a user's inference.py hooks when the model dir has one, loaded, with its
    identity (serve.provenance; `target`: its name on a multi-model endpoint)."""
    model_dir = Path(model_dir or settings.model_dir)
    handler = with_user_hooks(handler_class(settings.handler)(settings), model_dir, settings.program)
    default = handler.accept_default()
    if not codecs.supports(handler.encoders, default):
        raise ModelLoadError(f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={default} is not a type this model answers; "
                             f"choose one of {', '.join(handler.encoders)}")
    handler.load(model_dir)
    handler.identity = provenance.loaded(settings, model_dir, target)
    return handler


def warm_up_http(loaded) -> bytes | None:
    """The HTTP request of a loaded handler's warm-up invocation (Handler.warm_up_request); None for none (a
    multi-model registry, a handler that builds none)."""
    synthetic = loaded.warm_up_request() if isinstance(loaded, Handler) else None
    if synthetic is None:
        return None
    content_type, accept, body = synthetic
    head = (f"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nAccept: {accept}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
