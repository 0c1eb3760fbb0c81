"""Multi-model endpoints: SageMaker's model-management API over the registry (serve.multimodel), on the one request
pipeline.

Routes (SageMaker's "custom containers contract for multi-model endpoints"; success bodies in the shapes that
multi-model-server gave, since SageMaker and existing clients read those; errors as everywhere in this runtime,
`{"error": ..., "code": N}`):

    POST   /models {"model_name", "url"}  200 loaded. 400 the body is not that JSON object, the name is empty, too long
                                          or holds "/" or control characters, or url is not under the model root
                                          (SAGEMAKER_MULTI_MODEL_DIR, /opt/ml/models). 404 url is not a directory.
                                          409 a model of that name is loaded or loading. 422 the artifact cannot be
                                          served (a broken model file, a failing inference.py: the message says why).
                                          507 it does not fit in the memory budget.
    GET    /models                        {"models": [{"modelName", "modelUrl"}], "nextPageToken"} by name; query
                                          `max_results` (or MMS's `limit`; 1-1000, default 100), `next_page_token`.
    GET    /models/{name}                 the model's description (memory, load time, invocations); 404.
    DELETE /models/{name}                 200 {"status": "Model \"name\" unregistered"}; 404; 409 while it first loads.
    POST   /models/{name}/invoke          the /invocations pipeline on that model; 404 when it is not loaded (an
                                          invocation's errors never name the model it sent).
    POST   /invocations                   X-Amzn-SageMaker-Target-Model names the model (exact model_name; it may be
                                          left out while exactly one model is loaded, as MMS allowed).
"""

from __future__ import annotations

import orjson
from flask import Blueprint, request

from serve.errors import BadRequest
from serve.multimodel import ModelRegistry, check_name
from serve.pipeline import invoke, read_body, start_invocation
from serve.settings import Settings


def _load_request(body: bytes) -> tuple[str, str]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise BadRequest('body must be a JSON object {"model_name": ..., "url": ...}')
    return check_name(document.get("model_name")), document.get("url")


def routes(registry: ModelRegistry, settings: Settings) -> Blueprint:
    """The /models routes, for create_app(..., registry=registry, routes=...)."""
    api = Blueprint("models", __name__)

    @api.post("/models")
    def load_model():
        name, url = _load_request(read_body(request._get_current_object()))
        model = registry.load(name, url)
        return {"status": f'Model "{name}" loaded', **model.summary(), "memoryBytes": model.memory_bytes,
                "loadSeconds": round(model.load_seconds, 6)}

    @api.get("/models")
    def list_models():
        max_results = request.args.get("max_results", request.args.get("limit"))
        return registry.page(max_results, request.args.get("next_page_token"))

    @api.get("/models/<name>")
    def describe_model(name: str):
        return registry.describe(name)

    @api.delete("/models/<name>")
    def unload_model(name: str):
        registry.unload(name)
        return {"status": f'Model "{name}" unregistered'}

    @api.post("/models/<name>/invoke")
    def invoke_model(name: str):
        http_request = request._get_current_object()
        invocation = start_invocation(http_request)
        with registry.lease(name) as handler:
            return invoke(handler, settings, http_request, invocation)

    return api
