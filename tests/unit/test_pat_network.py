"""PAT encoder vs the independent numpy reference, with weights from H5 files in the authors' layout."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.pat.network import GROUP_BYTES, EncoderSpec, PatEncoder, TaskHead, sinusoidal_encoding, spec_for
from models.pat.weights import load_encoder, load_head
from tests.unit import pat_reference as ref

TOKEN_ATOL = 1e-4  # float32 torch vs float64 reference; the bar against Keras
WEEK = 10080


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(20241124)


def _encoder_and_groups(tmp_path, rng, size, conv):
    groups = ref.random_encoder(rng, size, conv)
    path = ref.write_encoder_h5(tmp_path / f"PAT-{size}_weights.h5", groups)
    return load_encoder(path), groups


@pytest.mark.parametrize(("size", "conv", "minutes", "batch"), [
    ("S", False, WEEK, 2),  # a full week: 560 tokens
    ("M", False, 18 * 120, 2),
    ("L", False, WEEK, 1),  # a full week: 1120 tokens, the largest positions
    ("S", True, WEEK, 1),
    ("M", True, 18 * 60, 2),
    ("L", True, 9 * 120, 2),
])
def test_tokens_and_saliency_match_reference(tmp_path, rng, size, conv, minutes, batch):
    encoder, groups = _encoder_and_groups(tmp_path, rng, size, conv)
    assert encoder.spec == spec_for(f"PAT-{'Conv-' if conv else ''}{size}")
    x = rng.normal(size=(batch, minutes)).astype(np.float32)
    tokens, maps = ref.encoder_forward(groups, x, ref.SIZES[size][0])

    with torch.inference_mode():
        out = encoder.encode(torch.from_numpy(x), saliency=True)

    np.testing.assert_allclose(out.tokens.numpy(), tokens, rtol=0, atol=TOKEN_ATOL)
    np.testing.assert_allclose(out.embedding.numpy(), tokens.mean(axis=1), rtol=0, atol=TOKEN_ATOL)
    np.testing.assert_allclose(out.saliency.numpy(), ref.saliency(maps[-1], ref.SIZES[size][0]), rtol=0, atol=1e-6)


def test_float64_port_is_exact(tmp_path, rng):
    """In float64 the port equals the reference to rounding: the weight mapping is exact, not close."""
    encoder, groups = _encoder_and_groups(tmp_path, rng, "M", False)
    x = rng.normal(size=(2, 18 * 40))
    with torch.inference_mode():
        tokens = encoder.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(tokens, ref.encoder_forward(groups, x, 18)[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize(("variant", "params"), [
    ("PAT-S", 274_720), ("PAT-M", 993_440), ("PAT-L", 1_984_192),
    ("PAT-Conv-S", 273_280), ("PAT-Conv-M", 992_000), ("PAT-Conv-L", 1_983_616),
])
def test_parameter_counts_match_keras(variant, params):
    """Keras' counts; they only come out with 96-wide heads (inner width H*96)."""
    assert sum(p.numel() for p in PatEncoder(spec_for(variant)).parameters()) == params


def test_task_head_matches_reference(tmp_path, rng):
    head_groups = ref.random_head(rng)
    path = ref.write_finetuned_h5(tmp_path / "finetuned.h5", ref.random_encoder(rng, "S"), head_groups)
    head = load_head(path)
    embedding = rng.normal(size=(5, 96)).astype(np.float32)
    with torch.inference_mode():
        probability = head(torch.from_numpy(embedding)).numpy()
    assert sum(p.numel() for p in head.parameters()) == 12_545
    np.testing.assert_allclose(probability, ref.head_forward(head_groups, embedding.astype(np.float64)), atol=1e-6)


def test_batch_rows_are_independent(tmp_path, rng):
    encoder, _ = _encoder_and_groups(tmp_path, rng, "S", True)
    x = torch.from_numpy(rng.normal(size=(3, 18 * 30)).astype(np.float32))
    with torch.inference_mode():
        together = encoder.encode(x, saliency=True)
        alone = [encoder.encode(row[None], saliency=True) for row in x]
    np.testing.assert_allclose(together.tokens.numpy(), torch.cat([a.tokens for a in alone]).numpy(), atol=1e-5)
    np.testing.assert_allclose(together.saliency.numpy(), torch.cat([a.saliency for a in alone]).numpy(), atol=1e-7)


def test_saliency_is_a_per_patch_share_repeated_over_minutes():
    torch.manual_seed(0)
    encoder = PatEncoder(spec_for("PAT-M")).eval()
    with torch.inference_mode():
        saliency = encoder.saliency(torch.randn(2, 18 * 50))
    per_patch = saliency.view(2, 50, 18)
    assert saliency.shape == (2, 900)
    assert torch.equal(per_patch, per_patch[..., :1].expand_as(per_patch))
    np.testing.assert_allclose(per_patch[..., 0].sum(dim=1).numpy(), 1.0, rtol=1e-5)
    assert (saliency > 0).all()


def test_positional_encoding_is_concatenated_sines_then_cosines():
    pe = sinusoidal_encoding(1120, 96)
    np.testing.assert_array_equal(pe.numpy(), ref.positional_encoding(1120, 96))
    assert torch.equal(pe[0, :48], torch.zeros(48)) and torch.equal(pe[0, 48:], torch.ones(48))


@pytest.mark.parametrize(("shape", "message"), [
    ((2, 10079), "not a positive multiple of the patch size 18"),
    ((2, 0), "not a positive multiple"),
    ((10080,), "must be 2-D"),
    ((1, 2, 10080), "must be 2-D"),
])
def test_bad_input_shapes_raise_value_error(shape, message):
    encoder = PatEncoder(spec_for("PAT-S")).eval()
    with pytest.raises(ValueError, match=message):
        encoder(torch.zeros(shape))


def test_any_multiple_of_the_patch_size_is_accepted():
    encoder = PatEncoder(spec_for("PAT-L")).eval()
    with torch.inference_mode():
        assert encoder(torch.zeros(1, 9 * 7)).shape == (1, 7, 96)


def test_variant_names():
    assert spec_for("PAT-Conv-L") == EncoderSpec(patch_size=9, num_heads=12, num_layers=4, conv=True)
    assert EncoderSpec(patch_size=10, num_heads=2, num_layers=1).variant.startswith("PAT(patch=10")
    with pytest.raises(ValueError, match="unknown PAT variant"):
        spec_for("PAT-XL")


def test_head_output_is_a_probability_per_row():
    with torch.inference_mode():
        probability = TaskHead().eval()(torch.randn(4, 96) * 10)
    assert probability.shape == (4,)
    assert ((probability >= 0) & (probability <= 1)).all()


def test_folded_attention_equals_keras_four_projections_and_follows_new_weights():
    """Attention computes with two projections folded from Keras' four (models.pat.network.SelfAttention._folded);
    the answer is the four projections' in float64 to float32's precision, also after the weights change in place
    (as loading does)."""
    import torch.nn.functional as F

    torch.manual_seed(3)
    attention = PatEncoder(spec_for("PAT-S")).blocks[0].attention.eval()
    x = torch.randn(2, 40, attention.head_dim)

    def four_projections_in_float64():
        a, x64 = copy.deepcopy(attention).double(), x.double()
        out = F.scaled_dot_product_attention(a._split(a.q, x64), a._split(a.k, x64), a._split(a.v, x64))
        return a.o(out.transpose(1, 2).reshape(2, 40, -1))

    def check():
        expected = four_projections_in_float64()
        bound = 1e-5 * expected.abs().max().item()  # float32 keeps about 7 digits; these sums have ~100 terms
        torch.testing.assert_close(attention(x).double(), expected, rtol=0, atol=bound)

    with torch.no_grad():
        for p in attention.parameters():  # biases too: the fold drops or moves each of them
            p.normal_(0, 0.3)
        check()
        attention.k.weight.mul_(2.0)  # in place, as load_state_dict copies
        attention.q.bias.add_(1.0)
        attention.v.bias.add_(1.0)
        attention.o.bias.add_(-0.5)
        check()


def test_attention_in_head_groups_equals_all_heads_at_once(monkeypatch):
    """Under a small GROUP_BYTES, queries are projected a few heads at a time (their blocks stay small enough for
    malloc to reuse); the answer is the one of all heads in one product."""
    from models.pat import network

    torch.manual_seed(4)
    attention = PatEncoder(spec_for("PAT-M")).blocks[0].attention.eval()
    x = torch.randn(3, 50, attention.head_dim)
    with torch.no_grad():
        whole = attention(x)
        per_head = 3 * 50 * attention.head_dim * 4
        monkeypatch.setattr(network, "GROUP_BYTES", 5 * per_head)  # groups of 5, 5 and 2 of the 12 heads
        assert attention.heads_per_group(3, 50, 4) == 5
        torch.testing.assert_close(attention(x), whole, rtol=0, atol=1e-6)


def test_attention_takes_a_strided_kernel_output(monkeypatch):
    """CUDA's flash attention pads a head width that is not a multiple of 8 and returns a slice of its output, which
    is not contiguous: the heads' outputs are read from it whatever its strides (simulated here on the CPU)."""
    from models.pat import network

    functional = torch.nn.functional
    attend = functional.scaled_dot_product_attention

    def padded(q, k, v, scale):
        pad = (-q.shape[-1]) % 8 or 8
        out = attend(*(functional.pad(t, (0, pad)) for t in (q, k, v)), scale=scale)
        return out[..., :q.shape[-1]]

    torch.manual_seed(6)
    attention = network.SelfAttention(30, 3).eval()
    x = torch.randn(2, 7, 30)
    with torch.no_grad():
        plain = attention(x)
        monkeypatch.setattr(functional, "scaled_dot_product_attention", padded)
        torch.testing.assert_close(attention(x), plain, rtol=0, atol=1e-6)


def test_a_week_at_batch_8_is_projected_in_groups_under_the_limit():
    attention = PatEncoder(spec_for("PAT-M")).blocks[0].attention
    per_head = 8 * 560 * attention.head_dim * 4
    group = attention.heads_per_group(8, 560, 4)
    assert 1 <= group < attention.num_heads and group * per_head <= GROUP_BYTES
    assert PatEncoder(spec_for("PAT-S")).blocks[0].attention.heads_per_group(1, 560, 4) == 6  # one product
