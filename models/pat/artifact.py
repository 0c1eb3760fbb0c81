"""The PAT model artifact: the directory SageMaker extracts model.tar.gz into (/opt/ml/model).

    encoder weights      one file at the top: *.safetensors, *.pt/*.pth or Keras *.h5/*.hdf5
                         (or the file named by config.json "encoder")
    config.json          optional; see ArtifactConfig
    heads/<task>.<ext>   optional task heads (.safetensors, .pt/.pth, or Keras .h5 with dense_128/output)
    standardization.npz  optional `mean`, `std`: scalars or one value per minute of the week

models/pat/README.md documents the format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.pat.network import PatEncoder, TaskHead, spec_for
from models.pat.weights import WeightsError, load_encoder, load_head, save_encoder, save_head

CONFIG_FILE = "config.json"
HEADS_DIR = "heads"
STANDARDIZATION_FILE = "standardization.npz"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".h5", ".hdf5")
DEFAULT_THRESHOLD = 0.5
FORMAT_VERSION = 1
_TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class ArtifactError(ValueError):
    """The model directory is missing a file, or a file in it is malformed."""


@dataclass(frozen=True)
class Standardization:
    """Per-minute z-scoring: (x - mean) / std, with scalar or per-minute (length T) statistics."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def load(cls, path: Path) -> Standardization:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: np.asarray(data[key]) for key in ("mean", "std") if key in data.files}
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path.name}: not a readable .npz file ({exc})") from None
        missing = {"mean", "std"} - set(arrays)
        if missing:
            raise ArtifactError(f"{path.name}: missing array(s) {sorted(missing)}")
        return cls.checked(arrays["mean"], arrays["std"], path.name)

    @classmethod
    def checked(cls, mean: Any, std: Any, source: str = "standardization") -> Standardization:
        """Validated float32 statistics: each a scalar or a 1-D per-minute vector."""
        values = {}
        for name, value in (("mean", mean), ("std", std)):
            value = np.asarray(value)
            if value.dtype.kind not in "fiu":
                raise ArtifactError(f"{source}: {name} must be numeric, got dtype {value.dtype}")
            value = value.astype(np.float32)
            if value.size == 1:
                value = value.reshape(())
            elif value.ndim != 1:
                raise ArtifactError(f"{source}: {name} must be a scalar or 1-D, got shape {value.shape}")
            if not np.isfinite(value).all():
                raise ArtifactError(f"{source}: {name} has non-finite values")
            values[name] = value
        if values["mean"].ndim and values["std"].ndim and values["mean"].shape != values["std"].shape:
            raise ArtifactError(f"{source}: mean has {values['mean'].size} values, std {values['std'].size}")
        if (values["std"] <= 0).any():
            raise ArtifactError(f"{source}: std must be positive")
        return cls(values["mean"], values["std"])

    @property
    def minutes(self) -> int | None:
        """Sequence length the statistics are for, or None when both are scalars."""
        return max(self.mean.size, self.std.size) if self.mean.ndim or self.std.ndim else None

    def apply(self, activity: np.ndarray) -> np.ndarray:
        """(B, T) float32 z-scores. Raises ValueError when per-minute statistics do not fit T."""
        activity = np.asarray(activity, dtype=np.float32)
        if self.minutes is not None and activity.shape[-1] != self.minutes:
            raise ValueError(f"activity has {activity.shape[-1]} minutes; the standardization "
                             f"statistics are per minute of a {self.minutes}-minute sequence")
        return (activity - self.mean) / self.std

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, std=self.std)


@dataclass(frozen=True)
class ArtifactConfig:
    """config.json. Every key is optional; unknown keys are kept in `extra`.

    variant: "PAT-S" ... "PAT-Conv-L", checked against the weights.  patch_size: checked against the
    weights (needed only for a Conv encoder of a non-published size).  encoder: weights file name.
    pretrained: whether the encoder holds the authors' pretrained weights.  description: free text.
    tasks: {name: {"threshold": float in (0, 1), "description": str}} for the heads in heads/.
    """

    variant: str | None = None
    patch_size: int | None = None
    encoder: str | None = None
    pretrained: bool | None = None
    description: str = ""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any) -> ArtifactConfig:
        if not isinstance(raw, dict):
            raise ArtifactError(f"{CONFIG_FILE} must hold a JSON object")
        known = {"format_version", "variant", "patch_size", "encoder", "pretrained", "description", "tasks"}
        version = raw.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ArtifactError(f"{CONFIG_FILE}: format_version {version!r} is not supported (expected 1)")
        expect = {"variant": (str, "a string"), "patch_size": (int, "an integer"), "encoder": (str, "a string"),
                  "pretrained": (bool, "true or false"), "description": (str, "a string"),
                  "tasks": (dict, "an object")}
        for key, (kind, words) in expect.items():
            value = raw.get(key)
            if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise ArtifactError(f"{CONFIG_FILE}: {key!r} must be {words}")
        if raw.get("variant") is not None:
            try:
                spec_for(raw["variant"])
            except ValueError as exc:
                raise ArtifactError(f"{CONFIG_FILE}: {exc}") from None
        tasks = {}
        for name, task in (raw.get("tasks") or {}).items():
            tasks[name] = _parse_task(name, task)
        return cls(variant=raw.get("variant"), patch_size=raw.get("patch_size"), encoder=raw.get("encoder"),
                   pretrained=raw.get("pretrained"), description=raw.get("description") or "", tasks=tasks,
                   extra={k: v for k, v in raw.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": FORMAT_VERSION}
        for key in ("variant", "patch_size", "encoder", "pretrained", "description"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.tasks:
            out["tasks"] = self.tasks
        return {**out, **self.extra}


def _parse_task(name: str, task: Any) -> dict[str, Any]:
    if not _TASK_NAME.fullmatch(name):
        raise ArtifactError(f"{CONFIG_FILE}: task name {name!r} must be 1-64 letters, digits, '_' or '-'")
    if task is None:
        task = {}
    if not isinstance(task, dict):
        raise ArtifactError(f"{CONFIG_FILE}: task {name!r} must be an object")
    threshold = task.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise ArtifactError(f"{CONFIG_FILE}: task {name!r} threshold must be a number in (0, 1)")
    return {**task, "threshold": float(threshold)}


@dataclass
class PatArtifact:
    encoder: PatEncoder
    heads: dict[str, TaskHead]
    config: ArtifactConfig
    standardization: Standardization | None

    @property
    def variant(self) -> str:
        return self.encoder.spec.variant

    @property
    def patch_size(self) -> int:
        return self.encoder.spec.patch_size

    @property
    def thresholds(self) -> dict[str, float]:
        return {name: self.config.tasks.get(name, {}).get("threshold", DEFAULT_THRESHOLD) for name in self.heads}

    def standardize(self, activity: np.ndarray) -> np.ndarray:
        """z-scores with the artifact's statistics; the input as float32 when there are none."""
        if self.standardization is None:
            return np.asarray(activity, dtype=np.float32)
        return self.standardization.apply(activity)

    def scores(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """{task: (B,) probability} from (B, dim) pooled embeddings."""
        return {name: head(embedding) for name, head in self.heads.items()}

    def to(self, device: torch.device | str) -> PatArtifact:
        self.encoder.to(device)
        for head in self.heads.values():
            head.to(device)
        return self


def _inside(model_dir: Path, name: str) -> Path:
    if name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ArtifactError(f"{CONFIG_FILE}: encoder {name!r} must be a file name in the model directory")
    return model_dir / name


def find_encoder_file(model_dir: Path, config: ArtifactConfig) -> Path:
    if config.encoder:
        path = _inside(model_dir, config.encoder)
        if not path.is_file():
            raise ArtifactError(f"encoder weights {config.encoder!r} named in {CONFIG_FILE} not found")
        return path
    candidates = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    if not candidates:
        raise ArtifactError(f"no encoder weights in {model_dir}: expected one file ending in "
                            f"{', '.join(WEIGHT_SUFFIXES)}")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ArtifactError(f"several weight files ({names}): name the encoder in {CONFIG_FILE} 'encoder'")
    return candidates[0]


def _load_heads(model_dir: Path, config: ArtifactConfig, embed_dim: int) -> dict[str, TaskHead]:
    heads_dir = model_dir / HEADS_DIR
    files: dict[str, Path] = {}
    if heads_dir.is_dir():
        for path in sorted(heads_dir.iterdir()):
            if not (path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES):
                continue
            if not _TASK_NAME.fullmatch(path.stem):
                raise ArtifactError(f"{HEADS_DIR}/{path.name}: task name must be 1-64 letters, digits, '_' or '-'")
            if path.stem in files:
                raise ArtifactError(f"{HEADS_DIR}: two files for task {path.stem!r}")
            files[path.stem] = path
    missing = sorted(set(config.tasks) - set(files))
    if missing:
        raise ArtifactError(f"{CONFIG_FILE} lists task(s) {missing} with no file in {HEADS_DIR}/")
    heads = {}
    for name in [*config.tasks, *sorted(set(files) - set(config.tasks))]:
        try:
            head = load_head(files[name])
        except WeightsError as exc:
            raise ArtifactError(f"{HEADS_DIR}/{exc}") from None
        if head.hidden.in_features != embed_dim:
            raise ArtifactError(f"{HEADS_DIR}/{files[name].name}: head takes {head.hidden.in_features} "
                                f"features, the encoder gives {embed_dim}")
        heads[name] = head
    return heads


def _check_against_config(encoder: PatEncoder, config: ArtifactConfig) -> None:
    spec = encoder.spec
    if config.variant is not None and config.variant != spec.variant:
        raise ArtifactError(f"{CONFIG_FILE} says {config.variant}, the weights are {spec.variant}")
    if config.patch_size is not None and config.patch_size != spec.patch_size:
        raise ArtifactError(f"{CONFIG_FILE} says patch size {config.patch_size}, "
                            f"the weights have {spec.patch_size}")


def read_config(model_dir: Path) -> ArtifactConfig:
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return ArtifactConfig()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{CONFIG_FILE} is not valid JSON ({exc})") from None
    return ArtifactConfig.parse(raw)


def load_artifact(model_dir: Path) -> PatArtifact:
    """Load and validate a model directory; everything on CPU, in eval mode."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ArtifactError(f"model directory {model_dir} not found")
    config = read_config(model_dir)
    encoder_file = find_encoder_file(model_dir, config)
    patch_size = config.patch_size
    if patch_size is None and config.variant is not None:
        patch_size = spec_for(config.variant).patch_size
    try:
        encoder = load_encoder(encoder_file, patch_size=patch_size)
    except WeightsError as exc:
        raise ArtifactError(str(exc)) from None
    _check_against_config(encoder, config)
    heads = _load_heads(model_dir, config, encoder.spec.embed_dim)
    standardization = None
    if (model_dir / STANDARDIZATION_FILE).exists():
        standardization = Standardization.load(model_dir / STANDARDIZATION_FILE)
        minutes = standardization.minutes
        if minutes is not None and minutes % encoder.spec.patch_size:
            raise ArtifactError(f"{STANDARDIZATION_FILE}: {minutes} minutes is not a multiple of the "
                                f"patch size {encoder.spec.patch_size}")
    return PatArtifact(encoder=encoder, heads=heads, config=config, standardization=standardization)


def save_artifact(model_dir: Path, encoder: PatEncoder, heads: dict[str, TaskHead], config: ArtifactConfig,
                  standardization: Standardization | None = None) -> None:
    """Write a model directory: encoder.safetensors, heads/<task>.safetensors, config.json, stats; files 0644 and
    directories 0755 (safetensors writes 0600), so a server running as another user can read them."""
    model_dir.mkdir(parents=True, exist_ok=True)
    written = [model_dir, model_dir / "encoder.safetensors", model_dir / CONFIG_FILE]
    save_encoder(encoder, written[1])
    if heads:
        (model_dir / HEADS_DIR).mkdir(exist_ok=True)
        written.append(model_dir / HEADS_DIR)
        for name, head in heads.items():
            written.append(model_dir / HEADS_DIR / f"{name}.safetensors")
            save_head(head, written[-1])
    config = replace(config, encoder="encoder.safetensors")
    written[2].write_text(json.dumps(config.to_json(), indent=2) + "\n", encoding="utf-8")
    if standardization is not None:
        written.append(model_dir / STANDARDIZATION_FILE)
        standardization.save(written[-1])
    for path in written:
        path.chmod(0o755 if path.is_dir() else 0o644)
