"""Multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): the registry of loaded models. It knows no HTTP: serve.model_api
gives it SageMaker's model-management routes, and the app leases a model's handler for each invocation.

A broken artifact answers 422 (UnservableModel), not 500: the request and the server are fine, the artifact is not,
and retrying cannot help. A model's own `code/inference.py` replaces its hooks (serve.user_hooks), one module per
model directory; helper modules it imports from its `code/` are its own as well (serve.user_modules).

Processes. gunicorn runs one worker process with threads (serve.server). A load then reaches the one process every
invocation reaches, each model is in memory once, and no cross-process registry is needed. Several processes would
each hold their own copy of every model (or miss models loaded through another process). XGBoost releases the GIL
while predicting, so threads predict in parallel; what stays serial is Python's share of a request (HTTP, parsing).

Locks. The registry lock guards only the dictionaries and counters, for microseconds, never while loading or
predicting, so loading one model never blocks invocations of the others. Loads (and reloads) run one at a time under
a load lock, so that two loads never count on the same free share of the budget. A model's reload lock makes
concurrent invocations of an evicted model wait for one reload.

Memory. Each model is charged what its handler reports it keeps (Handler.model_bytes): the size of the model's own
objects, walked from the model (serve.memory.object_bytes: numpy arrays with their data, and for a script, what the
modules of its code/ keep), plus the native memory the handler knows of (XGBoost's trees by their UBJSON size, which
their heap exceeds by up to half). It is measured on the model alone: invocations running during the load allocate in
the same process, and a process-wide figure (resident set, malloc's statistics) would charge their memory to the
model; the garbage collector runs as usual. The figure is an estimate of the model, not of the process: malloc's
overhead, memory a library keeps beyond what the handler reports, and the set-up a model library does once per process
are not in it, which the budget's default (75 % of the container's memory) leaves room for.

Budget. With SERVE_MODEL_MEMORY_MB (for all loaded models together), a load that would exceed it first evicts the
least recently used idle models (none of their invocations in flight). An evicted model stays registered, listed and
described, and loads again from its url on its next invocation: SageMaker still believes it is loaded and routes
requests to it, which a 404 would fail. When the model cannot fit even so (larger than the budget, or the other
models busy) the load answers 507 and evicts nothing; SageMaker then unloads models it considers unused (DELETE) and
retries the load. A reload that cannot fit answers 507 as well. Without a budget (0) models are limited by the
machine alone, and a MemoryError while loading answers 507. After an eviction or unload, malloc_trim hands the
freed heap back to the system so that the resident set shrinks.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from serve.errors import BadRequest, Conflict, InsufficientMemory, ModelLoadError, NotFound, UnservableModel
from serve.handler import Handler
from serve.loading import build_handler, handler_class
from serve.memory import directory_bytes, return_free_memory
from serve.settings import MIB, Settings

log = logging.getLogger("serve.multimodel")

MAX_NAME_LENGTH = 1024  # SageMaker's limit on TargetModel
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _mib(size: int) -> str:
    return f"{size / MIB:.1f}"


def _shown(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "..."


def _called(model: "Model", invoked: bool, first: bool = False) -> str:
    """How an error names a model (`first`: at the start of a sentence): by its name to the management API
    (SageMaker's platform loaded it by that name); not by name to an invocation, whose errors never echo what its
    request sent (the target model header)."""
    called = "the target model" if invoked else f"model {_shown(model.name)}"
    return called[0].upper() + called[1:] if first else called


# --- the registry -------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Model:
    """One registered model. `handler` is None while it is evicted (it reloads from `url` when next invoked)."""

    name: str
    url: Path
    handler: Handler | None = None
    memory_bytes: int = 0
    load_seconds: float = 0.0
    loaded_at: float = 0.0
    loads: int = 0
    evictions: int = 0
    invocations: int = 0
    in_flight: int = 0
    facts: dict = field(default_factory=dict)
    retired: Handler | None = None  # unloaded during an invocation: closed when the last one ends
    reload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def status(self) -> str:
        if self.handler is not None:
            return "loaded"
        return "reloading" if self.reload_lock.locked() else "evicted"

    def summary(self) -> dict:
        return {"modelName": self.name, "modelUrl": str(self.url)}

    def describe(self) -> dict:
        return {
            **self.summary(),
            "status": self.status,
            "memoryBytes": self.memory_bytes,
            "loadSeconds": round(self.load_seconds, 6),
            "loadedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "loads": self.loads,
            "evictions": self.evictions,
            "invocations": self.invocations,
            "inFlight": self.in_flight,
            "model": self.facts,
        }


def check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise BadRequest("model_name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"model_name must be at most {MAX_NAME_LENGTH} characters")
    if "/" in name or not name.isprintable():
        raise BadRequest("model_name must not contain '/' or control characters")
    return name


class ModelRegistry:
    """The models of one multi-model endpoint: load, list, describe, unload, and the handler for an invocation."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = Path(os.path.normpath(os.path.abspath(settings.multi_model_dir)))
        self.budget = settings.model_memory_budget_bytes
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._models: dict[str, Model] = {}
        self._loading: set[str] = set()  # names of first loads in progress
        self._recent: OrderedDict[str, Model] = OrderedDict()  # resident models, least recently used first
        self._memory_in_use = 0
        handler_class(settings.handler)  # import the model family now, so that the first load does not wait for it

    @property
    def memory_in_use(self) -> int:
        """Bytes charged to the models now in memory."""
        return self._memory_in_use

    # --- management ---------------------------------------------------------------------------------------------

    def load(self, name: str, url: str) -> Model:
        check_name(name)
        model = Model(name, self._model_path(url))
        with self._lock:
            if name in self._models or name in self._loading:
                raise Conflict(f"Model {_shown(name)} is already loaded")
            self._loading.add(name)
        try:
            self._load(model, acquire=False)
        finally:
            with self._lock:
                self._loading.discard(name)
        return model

    def unload(self, name: str) -> None:
        with self._lock:
            model = self._models.pop(name, None)
            if model is None:
                if name in self._loading:
                    raise Conflict(f"Model {_shown(name)} is still loading")
                raise NotFound(f"Model not found: {_shown(name)}")
            handler = self._detach(model)
        self._close([handler] if handler else [])
        log.info("model unloaded", extra={"model": name})

    def describe(self, name: str) -> dict:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise NotFound(f"Model not found: {_shown(name)}")
            return model.describe()

    def page(self, max_results: str | None = None, next_page_token: str | None = None) -> dict:
        """One page of models sorted by name; the token is the last name given, so pages stay right while models
        come and go between calls."""
        limit = _page_size(max_results)
        after = _decode_token(next_page_token) if next_page_token else None
        with self._lock:
            names = sorted(name for name in self._models if after is None or name > after)
            models = [self._models[name].summary() for name in names[:limit]]
        body = {"models": models}
        if len(names) > limit:
            body["nextPageToken"] = base64.urlsafe_b64encode(names[limit - 1].encode()).decode().rstrip("=")
        return body

    # --- invocations ----------------------------------------------------------------------------------------------

    @contextmanager
    def lease(self, name: str | None) -> Iterator[Handler]:
        """The handler for one invocation of a model (None: the only one loaded). While leased, the model is not
        evicted, and an unloaded model's handler is closed only when its last lease ends."""
        model, handler = self._acquire(self._resolve(name))
        try:
            yield handler
        finally:
            self._release(model)

    def _release(self, model: Model) -> None:
        with self._lock:
            model.in_flight -= 1
            retired = model.retired if model.in_flight == 0 else None
            model.retired = None if retired else model.retired
        if retired:
            self._close([retired])

    def _resolve(self, name: str | None) -> str:
        if name:
            return name
        with self._lock:
            if len(self._models) == 1:
                return next(iter(self._models))
            count = len(self._models)
        raise BadRequest(f"{count} models are loaded: name one in the X-Amzn-SageMaker-Target-Model header "
                         "or use /models/{name}/invoke")

    def _acquire(self, name: str) -> tuple[Model, Handler]:
        while True:
            with self._lock:
                model = self._models.get(name)
                if model is None:
                    raise NotFound("Model not found: the target model is not loaded")
                if model.handler is not None:
                    model.in_flight += 1
                    model.invocations += 1
                    self._recent.move_to_end(name)
                    return model, model.handler
            with model.reload_lock:  # evicted: one invocation reloads it, the others wait and then use it
                with self._lock:
                    if model.handler is not None or self._models.get(name) is not model:
                        continue
                log.info("reloading evicted model", extra={"model": name})
                return model, self._load(model, acquire=True)

    # --- loading and memory -------------------------------------------------------------------------------------

    def _model_path(self, url) -> Path:
        if not isinstance(url, str) or not url:
            raise BadRequest("url must be a non-empty string")
        path = Path(os.path.normpath(url))
        if not path.is_absolute() or path == self.root or not path.is_relative_to(self.root):
            raise BadRequest(f"url must be a directory under {self.root} (SAGEMAKER_MULTI_MODEL_DIR)")
        try:
            path.stat()  # a name longer than the file system allows, or a NUL, fails here rather than while loading
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as error:
            raise BadRequest(f"url is not a path this file system can open: {getattr(error, 'strerror', None) or error}")
        root, resolved = Path(os.path.realpath(self.root)), Path(os.path.realpath(path))
        if resolved == root or not resolved.is_relative_to(root):  # a symbolic link inside the root leading outside
            raise BadRequest(f"url must be a directory under {self.root} (SAGEMAKER_MULTI_MODEL_DIR); it leads outside "
                             "it through a symbolic link")
        return path

    def _load(self, model: Model, acquire: bool) -> Handler:
        """Load (or reload) a model within the budget, register it, and count one invocation in flight if asked."""
        if not model.url.is_dir():
            raise NotFound("Model not found: the target model's directory is gone" if acquire
                           else f"Model not found: no model directory at {model.url}")
        with self._load_lock:
            with self._lock:
                evicted = self._evict_for(model.memory_bytes or directory_bytes(model.url), model, acquire)
            self._close(evicted)
            handler, charged, seconds = self._build(model, acquire)
            failure = None
            with self._lock:
                try:
                    evicted = self._evict_for(charged, model, acquire)
                except InsufficientMemory as error:
                    evicted, failure = [handler], error
                else:
                    if not self._register(model, handler, charged, seconds, acquire):
                        evicted.append(handler)
                        failure = NotFound(f"Model not found: {_called(model, acquire)} was unloaded while it "
                                           "reloaded")
            self._close(evicted)
        if failure:
            raise failure
        log.info("model loaded", extra={"model": model.name, "memory_bytes": charged,
                                        "load_seconds": round(seconds, 4)})
        return handler

    def _build(self, model: Model, invoked: bool) -> tuple[Handler, int, float]:
        """The model's handler, the bytes it keeps, and the seconds it took to load."""
        started = time.perf_counter()
        try:
            handler = build_handler(self.settings, model.url, target=model.name)
        except MemoryError:
            raise InsufficientMemory(f"not enough memory to load {_called(model, invoked)}") from None
        except ModelLoadError as error:
            log.warning("model load failed", extra={"model": model.name, "reason": error.message})
            if invoked:  # the loader's reason may quote the model's directory, named after the model
                raise UnservableModel("The target model cannot be served; the server log says why") from None
            raise UnservableModel(f"Model {_shown(model.name)} cannot be served: {error.message}") from None
        return handler, handler.model_bytes(), time.perf_counter() - started

    def _register(self, model: Model, handler: Handler, charged: int, seconds: float, acquire: bool) -> bool:
        """Make a loaded model resident (the lock is held); False when it was unloaded while it reloaded."""
        if model.loads and self._models.get(model.name) is not model:
            return False
        self._models[model.name] = model
        model.handler, model.memory_bytes, model.load_seconds = handler, charged, seconds
        model.loaded_at, model.loads, model.facts = time.time(), model.loads + 1, handler.describe()
        model.in_flight += int(acquire)
        model.invocations += int(acquire)
        self._recent[model.name] = model
        self._memory_in_use += charged
        return True

    def _evict_for(self, needed: int, model: Model, invoked: bool) -> list[Handler]:
        """Detach the least recently used idle models until `needed` more bytes fit the budget (the lock is held);
        their handlers, to close. Raises InsufficientMemory, evicting nothing, when they would not fit even so."""
        if not self.budget:
            return []
        if needed > self.budget:
            raise InsufficientMemory(f"{_called(model, invoked, first=True)} needs {_mib(needed)} MiB, more than the "
                                     f"{_mib(self.budget)} MiB budget for all models (SERVE_MODEL_MEMORY_MB)")
        free = self.budget - self._memory_in_use
        victims = []
        for other in self._recent.values():
            if free >= needed:
                break
            if other.in_flight == 0 and other is not model:
                victims.append(other)
                free += other.memory_bytes
        if free < needed:
            raise InsufficientMemory(
                f"{_called(model, invoked, first=True)} needs {_mib(needed)} MiB and only {_mib(free)} MiB of the "
                f"{_mib(self.budget)} MiB budget can be freed: the other models are busy")
        for victim in victims:
            victim.evictions += 1
            log.info("model evicted", extra={"model": victim.name, "memory_bytes": victim.memory_bytes})
        return [self._detach(victim) for victim in victims]

    def _detach(self, model: Model) -> Handler | None:
        """Take a model out of memory accounting (the lock is held). Its handler, to close, unless invocations are
        still using it: then the last of them closes it."""
        handler, model.handler = model.handler, None
        if handler is None:
            return None
        self._recent.pop(model.name, None)
        self._memory_in_use -= model.memory_bytes
        if model.in_flight:
            model.retired = handler
            return None
        return handler

    def close(self) -> None:
        """The worker is exiting: close every loaded handler."""
        with self._lock:
            handlers = [model.handler for model in self._models.values()]
        self._close(handlers)

    @staticmethod
    def _close(handlers: list[Handler | None]) -> None:
        if not handlers:
            return
        for handler in handlers:
            if handler is not None:
                handler.close()
        handlers.clear()  # drop the last references before handing the memory back
        return_free_memory()


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise BadRequest(f"max_results must be an integer from 1 to {MAX_PAGE_SIZE}")
    return size


def _decode_token(token: str) -> str:
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        raise BadRequest("next_page_token is not one this server gave") from None
