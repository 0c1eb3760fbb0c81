"""Read and write PAT weights: the authors' Keras H5 files and the native safetensors / .pt format.

Keras H5 (read only). Accepted: `save_weights` files (`PAT-S_29k_weights.h5`, groups at the root),
whole-model files (the same under `model_weights/`, dataset names with or without `:0`), and
fine-tuned whole models where the encoder is nested as one layer and the head is `dense_128` +
`output`. Datasets are recognised by the ends of their paths, e.g.
`.../encoder_layer_2_attention/query/kernel`; decoder and optimizer weights are ignored.

Native: a flat state dict of `PatEncoder` (or `TaskHead`) tensors, in safetensors (metadata
records the variant and patch size) or a `torch.save`d dict read with `weights_only=True`.
The size (S/M/L), the Conv patch embedding and the patch size are inferred from tensor shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from models.pat.network import SIZES, EncoderSpec, PatEncoder, TaskHead

H5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
PATCH_SIZE_KEY = "pat.patch_size"
VARIANT_KEY = "pat.variant"

State = dict[str, torch.Tensor]


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not hold a PAT encoder/head."""


# How a Keras dataset path ends -> the torch state-dict name (layer numbers become 0-based).
_KERAS_RULES = [
    (re.compile(r"(?:^|/)dense/(kernel|bias)$"), "patch_embed.proj.{0}"),
    (re.compile(r"(?:^|/)conv1d_patch_embedding/(?:.*/)?(kernel|bias)$"), "patch_embed.conv.{0}"),
    (re.compile(r"(?:^|/)encoder_layer_(\d+)_attention/(query|key|value|attention_output)/(kernel|bias)$"),
     "blocks.{0}.attention.{1}.{2}"),
    (re.compile(r"(?:^|/)encoder_layer_(\d+)_(norm1|norm2)/(gamma|beta)$"), "blocks.{0}.{1}.{2}"),
    (re.compile(r"(?:^|/)encoder_layer_(\d+)_(ff1|ff2)/(kernel|bias)$"), "blocks.{0}.{1}.{2}"),
    (re.compile(r"(?:^|/)dense_128/(kernel|bias)$"), "head.hidden.{0}"),
    (re.compile(r"(?:^|/)output/(kernel|bias)$"), "head.output.{0}"),
]
_RENAME = {"kernel": "weight", "gamma": "weight", "beta": "bias",
           "query": "q", "key": "k", "value": "v", "attention_output": "o"}


def _torch_name(template: str, groups: tuple[str, ...]) -> str:
    parts = []
    for group in groups:
        parts.append(str(int(group) - 1) if group.isdigit() else _RENAME.get(group, group))
    return template.format(*parts)


def _from_keras(name: str, value: np.ndarray) -> torch.Tensor:
    """Keras layout -> torch layout for one tensor."""
    value = np.asarray(value, dtype=np.float32)
    if name.endswith("conv.weight"):  # (3, 1, out) -> (out, 1, 3)
        value = value.transpose(2, 1, 0)
    elif name.endswith(("attention.q.weight", "attention.k.weight", "attention.v.weight")):
        value = value.reshape(value.shape[0], -1).T  # (dim, H, key) -> (H*key, dim)
    elif name.endswith("attention.o.weight"):
        value = value.reshape(-1, value.shape[-1]).T  # (H, key, dim) -> (dim, H*key)
    elif name.endswith(("attention.q.bias", "attention.k.bias", "attention.v.bias")):
        value = value.reshape(-1)
    elif name.endswith("weight") and value.ndim == 2:  # Dense kernels are (in, out)
        value = value.T
    return torch.from_numpy(np.ascontiguousarray(value))


def _magic(path: Path) -> bytes:
    try:
        with Path(path).open("rb") as f:
            return f.read(8)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {Path(path).name}: {exc.strerror}") from None


def read_keras_h5(path: Path) -> tuple[State, State]:
    """(encoder state, head state) in torch naming from a Keras H5 file; the head may be empty."""
    path = Path(path)
    found: dict[str, tuple[str, np.ndarray]] = {}
    names: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            scope = f["model_weights"] if "model_weights" in f else f
            scope.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
            for h5_name in names:
                key = h5_name.removesuffix(":0")
                for pattern, template in _KERAS_RULES:
                    if match := pattern.search(key):
                        name = _torch_name(template, match.groups())
                        if name in found:
                            raise WeightsError(f"{path.name}: both {found[name][0]!r} and {h5_name!r} "
                                               f"look like {name}")
                        found[name] = (h5_name, scope[h5_name][()])
                        break
    except OSError as exc:
        raise WeightsError(f"{path.name}: not a readable H5 file ({exc})") from None
    if not found and any(re.search(r"(?:^|/)vars/\d+$", n) for n in names):
        raise WeightsError(f"{path.name}: Keras 3 '.weights.h5' files store weights by position, not by "
                           "layer name; save the model with Keras 2 save_weights or as a whole .h5 model")
    state = {name: _from_keras(name, value) for name, (_, value) in found.items()}
    head = {name.removeprefix("head."): t for name, t in state.items() if name.startswith("head.")}
    encoder = {name: t for name, t in state.items() if not name.startswith("head.")}
    return encoder, head


def infer_spec(state: Mapping[str, torch.Tensor], patch_size: int | None = None) -> EncoderSpec:
    """The encoder shape from its tensors. `patch_size` is needed only for a Conv encoder whose
    heads/layers are not a published size (its weights do not depend on the patch size)."""
    try:
        conv = "patch_embed.conv.weight" in state
        embed = state["patch_embed.conv.weight" if conv else "patch_embed.proj.weight"]
        dim = embed.shape[0]
        layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
        if not layer_ids or layer_ids != set(range(len(layer_ids))):
            raise WeightsError(f"transformer blocks must be numbered 0..L-1, found {sorted(layer_ids)}")
        inner = state["blocks.0.attention.q.weight"].shape[0]
        ffn = state["blocks.0.ff1.weight"].shape[0]
    except KeyError as exc:
        raise WeightsError(f"not a PAT encoder: missing tensor {exc.args[0]}") from None
    if inner % dim:
        raise WeightsError(f"attention width {inner} is not a multiple of the embedding width {dim}")
    heads, layers = inner // dim, len(layer_ids)
    if conv:
        size = next((s for s in SIZES.values() if (s.num_heads, s.num_layers) == (heads, layers)), None)
        if patch_size is None and size is None:
            raise WeightsError(f"Conv encoder with {heads} heads and {layers} layers is not a published "
                               "size: its patch size must be given")
        patch = patch_size or size.patch_size
    else:
        patch = embed.shape[1]
        if patch_size is not None and patch_size != patch:
            raise WeightsError(f"the weights have patch size {patch}, not the configured {patch_size}")
    return EncoderSpec(patch_size=patch, num_heads=heads, num_layers=layers, conv=conv,
                       embed_dim=dim, ffn_dim=ffn)


def encoder_from_state(state: Mapping[str, torch.Tensor], patch_size: int | None = None) -> PatEncoder:
    """A PatEncoder (eval mode) holding exactly these tensors."""
    encoder = PatEncoder(infer_spec(state, patch_size))
    _load_strict(encoder, state, "encoder")
    return encoder.eval()


def head_from_state(state: Mapping[str, torch.Tensor]) -> TaskHead:
    """A TaskHead (eval mode) holding these tensors; widths from their shapes."""
    try:
        hidden, dim = state["hidden.weight"].shape
    except (KeyError, ValueError):
        raise WeightsError("not a PAT task head: expected hidden.weight (128, 96), hidden.bias, "
                           "output.weight (1, 128), output.bias") from None
    head = TaskHead(embed_dim=dim, hidden=hidden)
    _load_strict(head, state, "task head")
    return head.eval()


def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"{what} tensors do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise WeightsError(f"{what} tensor {name} has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(expected[name].shape)}")
        if not tensor.is_floating_point():
            raise WeightsError(f"{what} tensor {name} is {tensor.dtype}, expected floating point")
    module.load_state_dict({k: v.float() for k, v in state.items()})


def read_state(path: Path) -> tuple[State, dict[str, str]]:
    """(tensors, metadata) from safetensors or a weights-only torch file; detected by content."""
    path = Path(path)
    if _magic(path).startswith(ZIP_MAGIC):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for bad files
            raise WeightsError(f"{path.name}: not a weights-only torch file ({type(exc).__name__})") from None
        if not isinstance(state, Mapping) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise WeightsError(f"{path.name}: expected a dict of name -> tensor")
        return dict(state), {}
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path.name}: neither H5, safetensors nor a torch file ({exc})") from None


def load_encoder(path: Path, patch_size: int | None = None) -> PatEncoder:
    """A PatEncoder from any supported file (Keras H5, safetensors, .pt)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"encoder weights {path.name} not found")
    if _magic(path) == H5_MAGIC:
        state, _ = read_keras_h5(path)
    else:
        state, metadata = read_state(path)
        if patch_size is None and PATCH_SIZE_KEY in metadata:
            patch_size = int(metadata[PATCH_SIZE_KEY])
    try:
        return encoder_from_state(state, patch_size)
    except WeightsError as exc:
        raise WeightsError(f"{path.name}: {exc}") from None


def load_head(path: Path) -> TaskHead:
    """A TaskHead from safetensors, .pt, or a Keras H5 holding `dense_128` and `output`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"task head {path.name} not found")
    if _magic(path) == H5_MAGIC:
        state = read_keras_h5(path)[1]
        if not state:
            raise WeightsError(f"{path.name}: no fine-tuning head (Keras layers dense_128 and output)")
    else:
        state = read_state(path)[0]
    try:
        return head_from_state(state)
    except WeightsError as exc:
        raise WeightsError(f"{path.name}: {exc}") from None


def save_encoder(encoder: PatEncoder, path: Path) -> None:
    """safetensors with the variant and patch size in its metadata."""
    spec = encoder.spec
    metadata = {VARIANT_KEY: spec.variant, PATCH_SIZE_KEY: str(spec.patch_size)}
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(path), metadata)


def save_head(head: TaskHead, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))
