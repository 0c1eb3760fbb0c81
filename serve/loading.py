"""Handler loading: the handler that SERVE_HANDLER names (found through serve.families), with a user's `inference.py`
hooks when the model directory has one (serve.user_hooks), loaded and warmed up."""

from __future__ import annotations

from pathlib import Path

from serve import codecs, families, provenance
from serve.errors import ModelLoadError
from serve.handler import Handler
from serve.settings import Settings
from serve.user_hooks import with_user_hooks


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
