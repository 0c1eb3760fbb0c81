"""Independent numpy (float64) forward pass of the Keras PAT encoder, and an h5py writer for the
authors' Keras-2 weight layout. Written from the specification, not from models/pat: weights stay
in their Keras shapes ((in, heads, key) attention kernels, (k, in, out) conv kernels) throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

DIM = 96
FFN = 256
EPS = 1e-6
SIZES = {"S": (18, 6, 1), "M": (18, 12, 2), "L": (9, 12, 4)}  # patch, heads, layers

Groups = dict[str, dict[str, np.ndarray]]  # H5 layer group -> weight name (no ':0') -> array


def random_encoder(rng: np.random.Generator, size: str, conv: bool = False) -> Groups:
    """Keras-shaped random weights of PAT-{size} (or PAT-Conv-{size}), grouped as Keras saves them."""
    patch, heads, layers = SIZES[size]

    def kernel(*shape, fan_in):
        return rng.normal(0.0, fan_in ** -0.5, shape).astype(np.float32)

    def vector(n, centre=0.0):
        return (centre + rng.normal(0.0, 0.1, n)).astype(np.float32)

    groups: Groups = {}
    if conv:
        groups["conv1d_patch_embedding"] = {
            "conv1d_patch_embedding/kernel": kernel(3, 1, DIM, fan_in=3),
            "conv1d_patch_embedding/bias": vector(DIM),
        }
    else:
        groups["dense"] = {"dense/kernel": kernel(patch, DIM, fan_in=patch), "dense/bias": vector(DIM)}
    for i in range(1, layers + 1):
        att, block = f"encoder_layer_{i}_attention", {}
        for proj in ("query", "key", "value"):
            block[f"{att}/{proj}/kernel"] = kernel(DIM, heads, DIM, fan_in=DIM)
            block[f"{att}/{proj}/bias"] = rng.normal(0.0, 0.1, (heads, DIM)).astype(np.float32)
        block[f"{att}/attention_output/kernel"] = kernel(heads, DIM, DIM, fan_in=heads * DIM)
        block[f"{att}/attention_output/bias"] = vector(DIM)
        for norm in ("norm1", "norm2"):
            block[f"encoder_layer_{i}_{norm}/gamma"] = vector(DIM, 1.0)
            block[f"encoder_layer_{i}_{norm}/beta"] = vector(DIM)
        block[f"encoder_layer_{i}_ff1/kernel"] = kernel(DIM, FFN, fan_in=DIM)
        block[f"encoder_layer_{i}_ff1/bias"] = vector(FFN)
        block[f"encoder_layer_{i}_ff2/kernel"] = kernel(FFN, DIM, fan_in=FFN)
        block[f"encoder_layer_{i}_ff2/bias"] = vector(DIM)
        groups[f"encoder_layer_{i}_transformer"] = block
    return groups


def random_head(rng: np.random.Generator) -> Groups:
    """The fine-tuning head's Dense layers, Keras names and shapes."""
    return {
        "dense_128": {"dense_128/kernel": rng.normal(0, DIM ** -0.5, (DIM, 128)).astype(np.float32),
                      "dense_128/bias": rng.normal(0, 0.1, 128).astype(np.float32)},
        "output": {"output/kernel": rng.normal(0, 128 ** -0.5, (128, 1)).astype(np.float32),
                   "output/bias": rng.normal(0, 0.1, 1).astype(np.float32)},
    }


def encoder_layer_names(groups: Groups) -> list[str]:
    """Layer order of the saved encoder, weightless layers included (they get empty groups)."""
    embed = ["reshape", "conv1d_patch_embedding", "global_avg_pooling"] if "conv1d_patch_embedding" in groups \
        else ["reshape", "dense"]
    blocks = sorted((g for g in groups if g.startswith("encoder_layer_")), key=lambda g: int(g.split("_")[2]))
    return ["inputs", *embed, "tf.__operators__.add", *blocks]


def write_keras_h5(path: Path, groups: Groups, layer_names: list[str], *, whole_model: bool = False,
                   suffix: str = ":0") -> Path:
    """Write Keras-2 H5: `save_weights` layout, or a whole-model file (weights under model_weights/)."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.18.0"
        root = f
        if whole_model:
            f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {}}).encode()
            root = f.create_group("model_weights")
            root.attrs["backend"] = b"tensorflow"
            root.attrs["keras_version"] = b"2.18.0"
        root.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        for name in layer_names:
            group = root.create_group(name)
            weights = groups.get(name, {})
            group.attrs["weight_names"] = np.array([(w + suffix).encode() for w in weights], dtype="S")
            for weight, value in weights.items():
                group.create_dataset(weight + suffix, data=value)
    return path


def write_encoder_h5(path: Path, groups: Groups, **kwargs) -> Path:
    return write_keras_h5(path, groups, encoder_layer_names(groups), **kwargs)


def write_finetuned_h5(path: Path, encoder: Groups, head: Groups, suffix: str = ":0") -> Path:
    """A whole fine-tuned model as the authors' notebook saves it: the encoder nested as one layer."""
    nested = {"encoder_model": {w: v for g in encoder.values() for w, v in g.items()}, **head}
    names = ["finetuning_inputs", "encoder_model", "global_avg_pool", "dropout", "dense_128", "output"]
    return write_keras_h5(path, nested, names, whole_model=True, suffix=suffix)


def positional_encoding(num_patches: int, dim: int) -> np.ndarray:
    """Sines then cosines (concatenated) as the Keras code computes them in float32; every float32
    operation is evaluated exactly (float64) and rounded, i.e. a correctly rounded float32 result."""
    def f32(value):
        return np.asarray(value, dtype=np.float64).astype(np.float32).astype(np.float64)

    rate = f32(-f32(np.log(10000.0)) / dim)
    div = f32(np.exp(f32(np.arange(0, dim, 2) * rate)))
    angle = f32(np.arange(num_patches)[:, None] * div)
    return f32(np.concatenate([np.sin(angle), np.cos(angle)], axis=-1))


def _layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _patch_embedding(groups: Groups, patches: np.ndarray) -> np.ndarray:
    if "dense" in groups:
        w = {k: v.astype(np.float64) for k, v in groups["dense"].items()}
        return patches @ w["dense/kernel"] + w["dense/bias"]
    conv = groups["conv1d_patch_embedding"]
    kernel = conv["conv1d_patch_embedding/kernel"].astype(np.float64)  # (3, 1, out)
    padded = np.pad(patches, ((0, 0), (0, 0), (1, 1)))  # 'same' zero padding inside each patch
    width = patches.shape[-1]
    out = sum(padded[..., t:t + width, None] * kernel[t, 0] for t in range(3))
    out = np.maximum(out + conv["conv1d_patch_embedding/bias"], 0.0)
    return out.mean(axis=2)


def encoder_forward(groups: Groups, x: np.ndarray, patch: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Tokens (B, N, 96) and each layer's attention (B, H, N, N), float64."""
    x = np.asarray(x, dtype=np.float64)
    batch, minutes = x.shape
    n = minutes // patch
    h = _patch_embedding(groups, x.reshape(batch, n, patch)) + positional_encoding(n, DIM)
    maps = []
    blocks = sorted((g for g in groups if g.startswith("encoder_layer_")), key=lambda g: int(g.split("_")[2]))
    for name in blocks:
        i = name.split("_")[2]
        w = {k.split("/", 1)[1] if k.startswith(f"encoder_layer_{i}_attention") else k: v.astype(np.float64)
             for k, v in groups[name].items()}
        q, k, v = (np.einsum("bnd,dhk->bhnk", h, w[f"{p}/kernel"], optimize=True) + w[f"{p}/bias"][:, None, :]
                   for p in ("query", "key", "value"))
        q = q / np.sqrt(q.shape[-1])  # Keras scales by 1/sqrt(key_dim), key_dim = 96
        probs = _softmax(q @ k.swapaxes(-1, -2))  # (B, H, queries, keys)
        context = probs @ v  # (B, H, N, key_dim)
        attended = np.einsum("bhqk,hkd->bqd", context, w["attention_output/kernel"], optimize=True)
        attended = attended + w["attention_output/bias"]
        h = _layer_norm(h + attended, w[f"encoder_layer_{i}_norm1/gamma"], w[f"encoder_layer_{i}_norm1/beta"])
        ff = np.maximum(h @ w[f"encoder_layer_{i}_ff1/kernel"] + w[f"encoder_layer_{i}_ff1/bias"], 0.0)
        ff = ff @ w[f"encoder_layer_{i}_ff2/kernel"] + w[f"encoder_layer_{i}_ff2/bias"]
        h = _layer_norm(h + ff, w[f"encoder_layer_{i}_norm2/gamma"], w[f"encoder_layer_{i}_norm2/beta"])
        maps.append(probs)
    return h, maps


def saliency(last_attention: np.ndarray, patch: int) -> np.ndarray:
    """The explainability notebook's map: sum over queries, mean over heads, sum-to-1, per minute."""
    received = last_attention.sum(axis=2).mean(axis=1)  # (B, N)
    received = received / received.sum(axis=1, keepdims=True)
    return np.repeat(received, patch, axis=1)


def head_forward(head: Groups, embedding: np.ndarray) -> np.ndarray:
    """Dense(128, relu) -> Dense(1, sigmoid) on the pooled embedding; (B,) probabilities."""
    hidden = np.maximum(embedding @ head["dense_128"]["dense_128/kernel"] + head["dense_128"]["dense_128/bias"], 0)
    logit = hidden @ head["output"]["output/kernel"] + head["output"]["output/bias"]
    return 1.0 / (1.0 + np.exp(-logit[:, 0]))
