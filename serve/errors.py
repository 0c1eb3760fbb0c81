"""Typed errors. Each carries its HTTP status; serve.app maps them to responses in one place.

Messages are sent to clients: they say what was wrong, never which values were sent.
"""

from __future__ import annotations


class ServeError(Exception):
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(ServeError):
    status = 400


class NotFound(ServeError):
    status = 404


class NotAcceptable(ServeError):
    status = 406


class Conflict(ServeError):
    status = 409


class PayloadTooLarge(ServeError):
    status = 413


class UnsupportedMediaType(ServeError):
    status = 415


class UnservableModel(ServeError):
    """Multi-model endpoints: the artifact a load names cannot be served; the load request itself was fine."""

    status = 422


class ModelLoadError(ServeError):
    """The model artifact cannot be served (raised at start-up or on a multi-model load)."""

    status = 500


class NotReady(ServeError):
    status = 503


class Unrecoverable(ServeError):
    """The worker can no longer serve (its device failed): a 503, and from then on /ping answers 503 too, so that
    SageMaker replaces the instance."""

    status = 503


class InsufficientMemory(ServeError):
    """Out of memory, not the request's fault: a multi-model load (SageMaker evicts a model and retries the load on
    507), or a batch that does not fit even split."""

    status = 507
