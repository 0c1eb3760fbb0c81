"""Typed errors. Their messages name variables, models and counts, never a patient's identifier, a feature value or a
body."""


class ServiceError(Exception):
    """Every error the services raise."""


class ConfigurationError(ServiceError):
    """A variable of the guide is missing or malformed."""


class BadInput(ServiceError):
    """The caller's input cannot be sent: nothing was invoked or written."""


class UnknownModelType(BadInput):
    pass


class MissingResource(ServiceError):
    """A table, bucket or endpoint the configuration names does not exist: nothing was written."""


class EndpointError(ServiceError):
    """The endpoint answered with an error status: nothing was written."""

    def __init__(self, status: int, model: str):
        super().__init__(f"endpoint of the {model} model answered {status}")
        self.status = status
        self.model = model
