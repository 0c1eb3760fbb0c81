"""PAT encoder (S, M, L and the Conv patch embedding) and the paper's task head.

A port of the authors' Keras model, layer for layer: patches of P minutes -> Dense(96) (or a
per-patch Conv1D + ReLU + mean) -> + fixed sinusoidal encoding -> post-LN transformer blocks.
Keras' MultiHeadAttention is built with key_dim=96 for every size, so each head is 96 wide
(inner width H*96) and scores are scaled by 1/sqrt(96); nn.MultiheadAttention cannot express
that, hence the explicit projections here. The weights are Keras' layer for layer; attention
computes the same function with half the projections (SelfAttention).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 96
FFN_DIM = 256
DROPOUT = 0.1
LAYER_NORM_EPS = 1e-6
HEAD_HIDDEN = 128
# Attention projects the queries of a group of heads at a time, so that each group's queries (and its attention output)
# stay under this many bytes, well under malloc's mmap threshold (32 MiB in the serving process: serve.malloc). A block
# above it is mapped afresh on every call, and the first write to each of its pages costs a page fault.
GROUP_BYTES = 8 << 20


@dataclass(frozen=True)
class EncoderSpec:
    """Shape of one PAT encoder. Every head is `embed_dim` wide, as in the Keras original."""

    patch_size: int
    num_heads: int
    num_layers: int
    conv: bool = False
    embed_dim: int = EMBED_DIM
    ffn_dim: int = FFN_DIM

    @property
    def size(self) -> str | None:
        """'S', 'M' or 'L' when the shape is one of the published sizes."""
        for name, ref in SIZES.items():
            if (self.patch_size, self.num_heads, self.num_layers, self.embed_dim, self.ffn_dim) == (
                ref.patch_size, ref.num_heads, ref.num_layers, ref.embed_dim, ref.ffn_dim
            ):
                return name
        return None

    @property
    def variant(self) -> str:
        """'PAT-S', 'PAT-Conv-L', ... or a descriptive name for a non-published shape."""
        kind = "PAT-Conv" if self.conv else "PAT"
        if self.size:
            return f"{kind}-{self.size}"
        return (f"{kind}(patch={self.patch_size},heads={self.num_heads},layers={self.num_layers},"
                f"dim={self.embed_dim},ffn={self.ffn_dim})")


SIZES = {
    "S": EncoderSpec(patch_size=18, num_heads=6, num_layers=1),
    "M": EncoderSpec(patch_size=18, num_heads=12, num_layers=2),
    "L": EncoderSpec(patch_size=9, num_heads=12, num_layers=4),
}
_VARIANT = re.compile(r"PAT-(Conv-)?([SML])")


def spec_for(variant: str) -> EncoderSpec:
    """EncoderSpec of a published variant name: 'PAT-S', 'PAT-M', 'PAT-L', 'PAT-Conv-S', ..."""
    match = _VARIANT.fullmatch(variant)
    if not match:
        raise ValueError(f"unknown PAT variant {variant!r}: expected PAT-S/M/L or PAT-Conv-S/M/L")
    base = SIZES[match.group(2)]
    return EncoderSpec(base.patch_size, base.num_heads, base.num_layers, conv=bool(match.group(1)))


def sinusoidal_encoding(num_patches: int, dim: int, device=None) -> torch.Tensor:
    """The fixed (num_patches, dim) encoding: sines in the first half, cosines in the second.

    The Keras code evaluates it in float32. Each float32 step here is computed in float64 and
    rounded (correctly rounded float32), so the table is the same on every device and library:
    a 1-ulp difference in one frequency moves angles near position 1000 by ~1e-4.
    """
    f32, f64 = torch.float32, torch.float64
    log_base = torch.tensor(math.log(10000.0), dtype=f32).to(f64)
    rate = (-log_base / dim).to(f32).to(f64)
    exponent = (torch.arange(0, dim, 2, dtype=f64) * rate).to(f32).to(f64)
    div = torch.exp(exponent).to(f32).to(f64)
    angle = (torch.arange(num_patches, dtype=f64)[:, None] * div).to(f32).to(f64)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).to(f32).to(device)


class LinearPatchEmbedding(nn.Module):
    """Keras 'dense': one linear map of each patch's P minutes."""

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(patch_size, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.proj(patches)


class ConvPatchEmbedding(nn.Module):
    """PAT-Conv: Conv1D(dim, 3, 'same', ReLU) inside each patch, then the mean over its minutes."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(1, dim, kernel_size=3, padding=1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        batch, num_patches, patch_size = patches.shape
        features = F.relu(self.conv(patches.reshape(batch * num_patches, 1, patch_size)))
        return features.mean(dim=-1).view(batch, num_patches, -1)


class SelfAttention(nn.Module):
    """Keras MultiHeadAttention(num_heads=H, key_dim=dim) applied as self-attention.

    Computed with two of its four projections. A head's score of query x against key x' is
    (x Wq + bq) . (x' Wk + bk) / sqrt(dim) = (x A + u) . x' + (terms the same for every key, which the
    softmax drops), with A = Wq Wk^T / sqrt(dim) and u = bq Wk^T / sqrt(dim): so the keys are the
    block's input itself. Since a softmax row sums to 1, the head's share of the output,
    P (x' Wv + bv) Wo_h, is (P x') (Wv Wo_h) plus a constant, so the values are the input too and one
    product maps every head's output to the model's width. A, u, Wv Wo_h and the constants are computed
    from the Keras weights in float64 when they change (loading copies in place). For inference: no
    gradient reaches the Keras weights through them (nothing here trains the encoder).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim
        inner = num_heads * dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.o = nn.Linear(inner, dim)

    def _split(self, proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each head's query map A^T (stacked: H*dim x dim) and u, the heads' output map ((Wv Wo_h)^T side by side:
        dim x H*dim) and the output bias, in the weights' dtype and device."""
        params = (self.q.weight, self.k.weight, self.v.weight, self.o.weight, self.q.bias, self.v.bias, self.o.bias)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if getattr(self, "_folded_key", None) != key:
            heads, width = self.num_heads, self.head_dim
            with torch.no_grad():
                wq, wk, wv, wo, bq, bv, bo = (p.detach().double() for p in params)
                wq, wk, wv = (w.view(heads, width, -1) for w in (wq, wk, wv))  # (H, head width, model width)
                wo_h = wo.view(wo.shape[0], heads, width).transpose(0, 1)  # (H, model width, head width)
                scale = 1.0 / math.sqrt(width)
                query = torch.matmul(wk.transpose(1, 2), wq) * scale  # A^T per head: x A = F.linear(x, A^T)
                query_bias = torch.einsum("hd,hdi->hi", bq.view(heads, width), wk) * scale
                out = torch.matmul(wo_h, wv)  # (Wv Wo_h)^T per head
                out_bias = bo + torch.einsum("hd,hod->o", bv.view(heads, width), wo_h)
                dtype, device = self.q.weight.dtype, self.q.weight.device
                self._folded_params = tuple(t.to(dtype=dtype, device=device) for t in (
                    query.reshape(heads * query.shape[1], -1), query_bias.reshape(-1),
                    out.transpose(0, 1).reshape(out.shape[1], -1), out_bias))
            self._folded_key = key
        return self._folded_params

    def heads_per_group(self, batch: int, length: int, element_size: int) -> int:
        """How many heads one matrix product projects: as many as keep their queries under GROUP_BYTES."""
        per_head = batch * length * self.head_dim * element_size
        return max(1, min(self.num_heads, GROUP_BYTES // per_head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        query, query_bias, out, out_bias = self._folded()
        group = self.heads_per_group(batch, length, x.element_size())
        keys, heads = None, None  # heads: (B, N, H*dim), every head's P x side by side, for the output map
        for first in range(0, self.num_heads, group):
            count = min(group, self.num_heads - first)
            rows = slice(dim * first, dim * (first + count))
            # Every head attends over the same keys and values (the input), so the group's heads are one sequence
            # of N*count queries: a token's queries head after head, as the projection lays them out. A softmax row
            # is one query's, so the result is the same; the kernel gets longer query blocks, and its output is
            # already (B, N, count*dim).
            q = F.linear(x, query[rows], query_bias[rows]).view(batch, 1, length * count, dim)
            if keys is None:
                keys = x.to(q.dtype).unsqueeze(1)  # under autocast, x cast once to the queries' dtype
            # the scale is in A; reshape, not view: CUDA's flash kernel pads a head width that is not a multiple of 8
            # and returns a slice
            attended = F.scaled_dot_product_attention(q, keys, keys, scale=1.0).reshape(batch, length, count * dim)
            if count == self.num_heads:
                heads = attended
            else:
                if heads is None:
                    heads = attended.new_empty(batch, length, self.num_heads * dim)
                heads[:, :, rows] = attended
        return F.linear(heads, out, out_bias)

    def attention_received(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N): attention each key patch receives, summed over queries, averaged over heads.

        Computed head by head in float32, so memory stays at one (B, N, N) map.
        """
        q = self._split(self.q, x).float()
        k = self._split(self.k, x).float()
        scale = 1.0 / math.sqrt(self.head_dim)
        total = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
        for head in range(self.num_heads):
            scores = torch.matmul(q[:, head], k[:, head].transpose(1, 2)) * scale
            total += torch.softmax(scores, dim=-1).sum(dim=1)
        return total / self.num_heads


class TransformerBlock(nn.Module):
    """Post-LN block: x = LN(x + MHA(x)); x = LN(x + FF(x))."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.attention = SelfAttention(spec.embed_dim, spec.num_heads)
        self.norm1 = nn.LayerNorm(spec.embed_dim, eps=LAYER_NORM_EPS)
        self.ff1 = nn.Linear(spec.embed_dim, spec.ffn_dim)
        self.ff2 = nn.Linear(spec.ffn_dim, spec.embed_dim)
        self.norm2 = nn.LayerNorm(spec.embed_dim, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x)))
        return self.norm2(x + self.dropout(self.ff2(F.relu(self.ff1(x)))))


@dataclass
class Encoded:
    tokens: torch.Tensor  # (B, N, dim)
    saliency: torch.Tensor | None  # (B, T) or None

    @property
    def embedding(self) -> torch.Tensor:
        """(B, dim): the mean over tokens, the paper's input to its task heads."""
        return self.tokens.mean(dim=1)


class PatEncoder(nn.Module):
    """Input (B, T) standardized minute activity, T a multiple of the patch size (10080 a week)."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.patch_embed = (ConvPatchEmbedding(spec.embed_dim) if spec.conv
                            else LinearPatchEmbedding(spec.patch_size, spec.embed_dim))
        self.blocks = nn.ModuleList(TransformerBlock(spec) for _ in range(spec.num_layers))
        self._encodings: dict[tuple[int, str], torch.Tensor] = {}

    def _position(self, num_patches: int, device: torch.device) -> torch.Tensor:
        key = (num_patches, str(device))
        if key not in self._encodings:
            self._encodings[key] = sinusoidal_encoding(num_patches, self.spec.embed_dim, device)
        return self._encodings[key]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is (B, T) with T a positive multiple of the patch size."""
        if x.dim() != 2:
            raise ValueError(f"activity must be 2-D (batch, minutes), got {x.dim()}-D")
        minutes, patch = x.shape[1], self.spec.patch_size
        if minutes == 0 or minutes % patch:
            raise ValueError(f"activity length {minutes} is not a positive multiple of the "
                             f"patch size {patch}")

    def encode(self, x: torch.Tensor, saliency: bool = False) -> Encoded:
        """Tokens, and optionally the per-minute saliency map (see `saliency`), in one pass."""
        self.check_input(x)
        batch, minutes = x.shape
        num_patches = minutes // self.spec.patch_size
        h = self.patch_embed(x.view(batch, num_patches, self.spec.patch_size))
        h = h + self._position(num_patches, h.device).to(h.dtype)
        received = None
        for index, block in enumerate(self.blocks):
            if saliency and index == len(self.blocks) - 1:
                received = block.attention.attention_received(h)
            h = block(h)
        if received is None:
            return Encoded(h, None)
        share = received / received.sum(dim=1, keepdim=True)
        return Encoded(h, share.repeat_interleave(self.spec.patch_size, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, dim) tokens."""
        return self.encode(x).tokens

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim) mean-pooled embedding."""
        return self.encode(x).embedding

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) the paper's explainability map, per minute.

        Last layer's attention summed over queries (what each patch receives), averaged over
        heads, normalized so the patch values sum to 1, then repeated over each patch's minutes.
        """
        return self.encode(x, saliency=True).saliency


class TaskHead(nn.Module):
    """The paper's head on the pooled embedding: Dropout(0.1) -> Dense(128, ReLU) -> Dense(1, sigmoid)."""

    def __init__(self, embed_dim: int = EMBED_DIM, hidden: int = HEAD_HIDDEN):
        super().__init__()
        self.dropout = nn.Dropout(DROPOUT)
        self.hidden = nn.Linear(embed_dim, hidden)
        self.output = nn.Linear(hidden, 1)

    def logit(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B,) pre-sigmoid score."""
        return self.output(F.relu(self.hidden(self.dropout(embedding)))).squeeze(-1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B,) probability."""
        return torch.sigmoid(self.logit(embedding))
