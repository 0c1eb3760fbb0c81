"""Reading a SageMaker XGBoost model directory: one booster or an ensemble, plus optional metadata.json.

Model files are `xgboost-model` (what SageMaker's built-in algorithm writes) or `xgboost-model-0..k` (k-fold outputs,
served as an ensemble) when the directory has them; otherwise the regular files directly in it, other than metadata.json
and dotfiles, named `*.json`, `*.ubj`, legacy binary (`*.bin`, `*.model`, no extension). Pickles load only when allowed (pickle runs code).
"""

from __future__ import annotations

import json
import pickle
import pickletools
import struct
from dataclasses import dataclass, field
from pathlib import Path

import xgboost as xgb

from serve.errors import ModelLoadError

MODEL_SUFFIXES = {"", ".json", ".ubj", ".bin", ".model", ".pkl", ".pickle"}
METADATA = "metadata.json"
VOTING_OBJECTIVES = {"multi:softmax", "binary:hinge"}
RUNTIME_VERSION = tuple(int(part) for part in xgb.__version__.split(".")[:3] if part.isdigit())


@dataclass
class XGBoostModel:
    boosters: list[xgb.Booster]
    objective: str
    num_features: int
    num_class: int
    feature_names: list[str] | None = None
    class_labels: list | None = None
    metadata: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    @property
    def votes(self) -> bool:
        return len(self.boosters) > 1 and self.objective in VOTING_OBJECTIVES

    def describe(self) -> dict:
        return {
            "objective": self.objective,
            "num_features": self.num_features,
            "num_class": self.num_class,
            "boosters": len(self.boosters),
            "files": self.files,
            "model_version": self.metadata.get("model_version"),
        }


def _ubj_version(data: bytes) -> tuple[int, ...] | None:
    """The `version` array of a UBJSON model (the writer's XGBoost version), read without a UBJSON library."""
    at = data.rfind(b"\x07version[")
    if at < 0:
        return None
    sizes = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8}
    formats = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}
    pos = at + len(b"\x07version[")
    item_type = None
    if data[pos:pos + 1] == b"$":
        item_type, pos = data[pos + 1:pos + 2], pos + 2
    count = None
    if data[pos:pos + 1] == b"#":
        marker = data[pos + 1:pos + 2]
        count = struct.unpack(formats[marker], data[pos + 2:pos + 2 + sizes[marker]])[0]
        pos += 2 + sizes[marker]
    numbers = []
    while (count is None or len(numbers) < count) and data[pos:pos + 1] != b"]":
        marker = item_type or data[pos:pos + 1]
        pos += 0 if item_type else 1
        if marker not in sizes:
            return None
        numbers.append(struct.unpack(formats[marker], data[pos:pos + sizes[marker]])[0])
        pos += sizes[marker]
    return tuple(numbers)


def writer_version(data: bytes) -> tuple[int, ...] | None:
    """The XGBoost version that wrote a JSON or UBJSON model (None for legacy binary)."""
    if data[:1] == b"{" and data[1:2] in (b'"', b" ", b"\n", b"\r", b"\t"):
        try:
            return tuple(json.loads(data).get("version", ())) or None
        except (ValueError, AttributeError):
            return None
    if data[:1] == b"{":
        return _ubj_version(data)
    return None


def _is_pickle(data: bytes) -> bool:
    """Any protocol: protocols 2+ open with PROTO (0x80); 0 and 1 are a run of opcodes up to STOP, which pickletools
    walks without running them. JSON, UBJSON (`{` is no opcode) and legacy binary models fail at the first byte."""
    if data[:1] == b"\x80":
        return True
    try:
        return any(opcode.name == "STOP" for opcode, _, _ in pickletools.genops(data))
    except (ValueError, EOFError, TypeError, IndexError, OverflowError, struct.error):  # not a pickle's opcodes
        return False


def _load_booster(path: Path, allow_pickle: bool) -> xgb.Booster:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelLoadError(f"cannot read {path.name}: {error.strerror or error}") from None
    if _is_pickle(data):
        if not allow_pickle:
            raise ModelLoadError(f"{path.name} is a pickle; pickles run code when loaded, so they load only with "
                                 "SERVE_ALLOW_PICKLE=true (better: re-save it with Booster.save_model as .ubj)")
        try:
            model = pickle.loads(data)  # noqa: S301 - allowed explicitly by the operator
        except Exception as error:
            raise ModelLoadError(f"{path.name}: unpickling failed: {error}") from error
        return model.get_booster() if hasattr(model, "get_booster") else model
    version = writer_version(data)
    if version and version[:2] > RUNTIME_VERSION[:2]:
        raise ModelLoadError(
            f"{path.name} was written by XGBoost {'.'.join(map(str, version))}, newer than this runtime's "
            f"{xgb.__version__}; newer models can load and predict wrongly, so it is refused. Use an image with "
            f"XGBoost >= {version[0]}.{version[1]}")
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown error"
        raise ModelLoadError(f"{path.name} is not a booster XGBoost {xgb.__version__} can load: {first_line}") from None
    return booster


def objective_of(booster: xgb.Booster) -> tuple[str, int]:
    config = json.loads(booster.save_config())["learner"]
    return config["objective"]["name"], int(config["learner_model_param"].get("num_class", "0"))


def model_files(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    files = sorted(path for path in model_dir.iterdir()
                   if path.is_file() and not path.name.startswith(".") and path.name != METADATA
                   and (path.suffix.lower() in MODEL_SUFFIXES or path.name.startswith("xgboost-model")))
    conventional = [path for path in files if path.name.startswith("xgboost-model")]
    files = conventional or files
    if not files:
        raise ModelLoadError(f"no XGBoost model file in {model_dir} (expected xgboost-model, *.json or *.ubj)")
    return files


def _metadata(model_dir: Path) -> dict:
    path = model_dir / METADATA
    if not path.exists():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except ValueError as error:
        raise ModelLoadError(f"{METADATA} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{METADATA} must hold a JSON object")
    return metadata


def load_model(model_dir: Path, allow_pickle: bool = False) -> XGBoostModel:
    """The model in a directory; ModelLoadError, with the reason, when it cannot be served (read errors included)."""
    try:
        return _read_model(Path(model_dir), allow_pickle)
    except OSError as error:  # unreadable (permissions, I/O), or gone while loading
        name = Path(error.filename).name if error.filename else "it"
        raise ModelLoadError(f"cannot read the model directory {model_dir} ({name}): {error.strerror or error}") \
            from None


def _read_model(model_dir: Path, allow_pickle: bool) -> XGBoostModel:
    files = model_files(Path(model_dir))
    boosters = [_load_booster(path, allow_pickle) for path in files]
    shapes = {(objective_of(b), b.num_features()) for b in boosters}
    if len(shapes) > 1:
        raise ModelLoadError("ensemble members differ in objective, classes or feature count: "
                             + ", ".join(path.name for path in files))
    (objective, num_class), num_features = shapes.pop()
    metadata = _metadata(Path(model_dir))
    names = metadata.get("feature_names") or boosters[0].feature_names
    if names is not None and (len(names) != num_features or len(set(names)) != len(names)):
        raise ModelLoadError(f"{len(names)} feature names (unique: {len(set(names))}) for a model of "
                             f"{num_features} features")
    labels = metadata.get("class_labels")
    expected_classes = num_class or 2
    if labels is not None and len(labels) != expected_classes:
        raise ModelLoadError(f"metadata.json has {len(labels)} class_labels for a model of {expected_classes} classes")
    return XGBoostModel(boosters, objective, num_features, num_class, list(names) if names else None,
                        labels, metadata, [path.name for path in files])
