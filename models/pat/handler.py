"""The PAT handler (SERVE_HANDLER=pat): embeddings, task scores, saliency and actigraphy metrics per recording.

Request formats: models/pat/inputs.py. Response (application/json):
    {"predictions": [{"id": ..., "embedding": [96 floats], "scores": {task: probability},
                      "above_threshold": {task: bool}, "saliency": [one value per minute],
                      "missing_minutes": n, "precision": "fp32", "metrics": {...}}]}
with only the outputs asked for ("id" when one was sent; "missing_minutes", and the SERVE_PRECISION that produced the
model's outputs, with any model output).
application/x-npy returns the embeddings alone, float32 (recordings, 96). application/jsonlines (Batch Transform,
SplitType=Line): one instance per line in, one prediction per line out.

Missing minutes (null in JSON, empty in CSV) are set to 0 after standardization, i.e. to that minute's mean, and
counted in `missing_minutes`; the actigraphy metrics leave them out instead (models/pat/actigraphy.py).

Faults (models/pat/runner.py): a request whose recordings do not fit in memory even one at a time is a 507, and the
handler keeps serving; a device left unusable is a 503 for this and every later request, and /ping turns 503
(serve.errors.Unrecoverable), so that SageMaker replaces the instance.
"""

from __future__ import annotations

import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import numpy as np

from models.pat.actigraphy import compute_metrics
from models.pat.artifact import ArtifactError, PatArtifact, load_artifact
from models.pat.batcher import BatcherClosed
from models.pat.runner import WEEK_MINUTES, DeviceFailed, PatModel, choose_device
from models.pat.inputs import (MODEL_OUTPUTS, Instance, PatRequest, check_csv_text, check_instance,
                                  from_json, from_rows, resolve_outputs)
from serve import codecs
from serve.errors import BadRequest, InsufficientMemory, ModelLoadError, NotReady, Unrecoverable
from serve.handler import Handler, Request


class PatHandler(Handler):
    decoders = {codecs.JSON: codecs.decode_json, codecs.JSONLINES: codecs.decode_jsonlines,
                codecs.CSV: codecs.decode_csv, codecs.NPY: codecs.decode_npy}
    encoders = {codecs.JSON: codecs.encode_json, codecs.JSONLINES: codecs.encode_jsonlines,
                codecs.NPY: codecs.encode_npy}
    default_accept = codecs.JSON

    def __init__(self, settings):
        super().__init__(settings)
        self._adopted: PatModel | None = None  # a user's model_fn returned a bare PatArtifact
        self._adopt_lock = threading.Lock()

    def serving(self, artifact: PatArtifact) -> PatModel:
        s = self.settings.family
        return PatModel(artifact, choose_device(s.device), s.max_batch_size, s.batch_wait_ms, s.torch_threads,
                        precision=s.precision)

    def model_fn(self, model_dir: Path) -> PatModel:
        try:
            artifact = load_artifact(model_dir)
        except ArtifactError as error:
            raise ModelLoadError(f"PAT model artifact: {error}") from None
        return self.serving(artifact)

    def adopt(self, model: Any) -> PatModel:
        return self.as_model(model)

    def warm_up(self) -> None:
        self.as_model(self.model).warm_up()

    def warm_up_request(self) -> tuple[str, str, bytes]:
        """A week of zeros as JSON, with every output."""
        minutes = self.as_model(self.model).facts.week_minutes or WEEK_MINUTES
        return codecs.JSON, codecs.JSON, b'{"instances": [[%s]]}' % b",".join([b"0"] * minutes)

    def describe(self) -> dict:
        return self.model.describe() if isinstance(self.model, PatModel) else {}

    def as_model(self, model: Any) -> PatModel:
        if isinstance(model, PatModel):
            return model
        if isinstance(model, PatArtifact):
            with self._adopt_lock:
                if self._adopted is None or self._adopted.artifact is not model:
                    self._adopted = self.serving(model)
                return self._adopted
        raise TypeError(f"model_fn returned a {type(model).__name__}; the PAT predict_fn needs a PatArtifact")

    def decode(self, body: bytes, request: Request) -> PatRequest:
        if request.content_type == codecs.CSV:
            check_csv_text(body)
        return as_request(super().decode(body, request), request)

    def predict_fn(self, data: Any, model: Any, request: Request) -> Any:
        model = self.as_model(model)
        data = as_request(data, request)
        embeddings_only = request.accept == codecs.NPY
        outputs = resolve_outputs(data.outputs, model.facts, embeddings_only)
        for number, instance in enumerate(data.instances, 1):
            check_instance(instance, number, outputs, model.facts)
        pending = submit(model, data.instances, outputs)
        metrics = [instance_metrics(instance, number, data) for number, instance in enumerate(data.instances, 1)] \
            if "metrics" in outputs else None
        results = collect(pending, len(data.instances), self.settings.timeout_seconds)
        measure(pending, model, request.metrics)
        if embeddings_only:
            return results["embedding"]
        return records(data.instances, outputs, results, metrics, model)

    def close(self) -> None:
        for model in (self.model, self._adopted):
            if isinstance(model, PatModel):
                model.close()


def as_request(data: Any, request: Request) -> PatRequest:
    """The request from what input_fn gave: ours, or a user's input_fn's JSON document or rows."""
    if isinstance(data, PatRequest):
        return data
    if isinstance(data, np.ndarray):
        return from_rows(data, request.attributes, missing_allowed=request.content_type != codecs.NPY)
    return from_json(data, request.attributes)


def submit(model: PatModel, instances: list[Instance], outputs: tuple[str, ...]) -> list:
    """Queue the recordings (grouped by length) on the batcher: [(instance indices, missing counts, Future)]."""
    if not MODEL_OUTPUTS.intersection(outputs):
        return []
    by_length: dict[int, list[int]] = {}
    for index, instance in enumerate(instances):
        by_length.setdefault(instance.activity.size, []).append(index)
    try:
        groups = [(indices, *model.standardize(np.stack([instances[i].activity for i in indices])))
                  for indices in by_length.values()]
    except ValueError as error:
        raise BadRequest(str(error)) from None
    try:
        return [(indices, missing, model.submit(x, saliency="saliency" in outputs))
                for indices, x, missing in groups]
    except BatcherClosed as error:
        raise NotReady(str(error)) from None
    except DeviceFailed as error:
        raise Unrecoverable(str(error)) from None


def collect(pending: list, count: int, timeout_s: float) -> dict[str, np.ndarray]:
    """Wait for the batcher; the outputs of every recording in request order."""
    results: dict[str, np.ndarray] = {}
    for indices, missing, future in pending:
        try:
            outputs = {**future.result(timeout_s), "missing_minutes": missing}
        except BatcherClosed as error:
            raise NotReady(str(error)) from None
        except FutureTimeout:
            raise NotReady(f"the model did not answer within {timeout_s} s; retry later") from None
        except MemoryError:
            raise InsufficientMemory("the recordings did not fit in the model's memory, even one at a time; retry "
                                     "later, or send fewer or shorter recordings") from None
        except DeviceFailed as error:
            raise Unrecoverable(str(error)) from None
        check_finite(outputs, indices)
        for name, value in outputs.items():
            if name not in results:
                results[name] = np.empty((count, *value.shape[1:]), dtype=value.dtype)
            results[name][indices] = value
    return results


def measure(pending: list, model: PatModel, into: dict) -> None:
    """The request's metrics (serve.metrics): how long its recordings queued, the largest batch that ran them, and
    the device memory in use (CUDA)."""
    if pending:
        into["QueueWait"] = round(max(future.queue_wait_s for _, _, future in pending) * 1000.0, 3)
        into["BatchSize"] = max(future.batch_rows for _, _, future in pending)
    memory = model.device_memory_bytes()
    if memory is not None:
        into["DeviceMemoryBytes"] = memory


def check_finite(outputs: dict[str, np.ndarray], indices: list[int]) -> None:
    """A recording whose outputs are not finite even in float32 (finite counts too large for the network) is a 400,
    never a NaN answer."""
    finite = np.logical_and.reduce([np.isfinite(value.reshape(len(value), -1)).all(axis=1)
                                    for name, value in outputs.items() if name != "missing_minutes"])
    if not finite.all():
        number = indices[int(np.argmin(finite))] + 1
        raise BadRequest(f"instance {number}: activity values too large for the model (its outputs are not finite)")


def instance_metrics(instance: Instance, number: int, data: PatRequest) -> dict:
    try:
        return compute_metrics(instance.activity, instance.start, data.metric_options)
    except ValueError as error:
        raise BadRequest(f"instance {number}: {error}") from None


def records(instances: list[Instance], outputs: tuple[str, ...], results: dict[str, np.ndarray],
            metrics: list[dict] | None, model: PatModel) -> list[dict]:
    tasks, thresholds = list(model.artifact.heads), model.artifact.thresholds
    out = []
    for index, instance in enumerate(instances):
        record: dict[str, Any] = {} if instance.id is None else {"id": instance.id}
        if "embedding" in outputs:
            record["embedding"] = results["embedding"][index]
        if "scores" in outputs:
            scores = dict(zip(tasks, results["scores"][index].tolist()))
            record["scores"] = scores
            record["above_threshold"] = {task: score >= thresholds[task] for task, score in scores.items()}
        if "saliency" in outputs:
            record["saliency"] = results["saliency"][index]
        if "missing_minutes" in results:
            record["missing_minutes"] = int(results["missing_minutes"][index])
            record["precision"] = model.runner.precision
        if metrics is not None:
            record["metrics"] = metrics[index]
        out.append(record)
    return out
