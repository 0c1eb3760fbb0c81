"""Weight files: Keras H5 layouts, variant inference, native formats, the converter CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open

from models.pat import convert
from models.pat.network import EncoderSpec, PatEncoder, TaskHead
from models.pat.weights import (
    WeightsError,
    encoder_from_state,
    load_encoder,
    load_head,
    read_keras_h5,
    save_encoder,
    save_head,
)
from tests.unit import pat_reference as ref

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def m_groups(rng):
    return ref.random_encoder(rng, "M")


@pytest.fixture
def m_h5(tmp_path, m_groups):
    return ref.write_encoder_h5(tmp_path / "PAT-M_29k_weights.h5", m_groups)


def _same_state(a: PatEncoder, b: PatEncoder) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("whole_model", "suffix"), [(True, ":0"), (True, "")])
def test_whole_model_layouts_load_the_same_weights(tmp_path, m_groups, m_h5, whole_model, suffix):
    variant = ref.write_encoder_h5(tmp_path / "model.h5", m_groups, whole_model=whole_model, suffix=suffix)
    assert _same_state(load_encoder(variant), load_encoder(m_h5))


def test_finetuned_model_gives_encoder_and_head(tmp_path, rng, m_groups, m_h5):
    head = ref.random_head(rng)
    path = ref.write_finetuned_h5(tmp_path / "finetuned.h5", m_groups, head, suffix="")
    with h5py.File(path, "a") as f:  # optimizer state beside model_weights must be ignored
        f.create_dataset("optimizer_weights/Adam/dense/kernel/m:0", data=np.zeros((18, 96), np.float32))
    assert _same_state(load_encoder(path), load_encoder(m_h5))
    loaded = load_head(path)
    np.testing.assert_array_equal(loaded.state_dict()["hidden.weight"].numpy(), head["dense_128"]["dense_128/kernel"].T)
    np.testing.assert_array_equal(loaded.state_dict()["output.bias"].numpy(), head["output"]["output/bias"])


@pytest.mark.parametrize(("size", "conv"), [("S", False), ("L", False), ("S", True), ("M", True), ("L", True)])
def test_variant_is_inferred_from_the_weights(tmp_path, rng, size, conv):
    path = ref.write_encoder_h5(tmp_path / "w.h5", ref.random_encoder(rng, size, conv))
    expected = f"PAT-{'Conv-' if conv else ''}{size}"
    assert load_encoder(path).spec.variant == expected


def test_decoder_weights_of_a_pretraining_model_are_ignored(tmp_path, m_groups, m_h5):
    groups = {**m_groups, "decoder_layer_1_transformer": {
        "decoder_layer_1_attention/query/kernel": np.ones((96, 12, 96), np.float32)},
        "decoder_dense": {"decoder_dense/kernel": np.ones((96, 18), np.float32)}}
    path = ref.write_keras_h5(tmp_path / "mae.h5", groups, list(groups), whole_model=True)
    assert _same_state(load_encoder(path), load_encoder(m_h5))


def test_linear_patch_size_conflict_is_reported(m_h5):
    with pytest.raises(WeightsError, match="patch size 18, not the configured 9"):
        load_encoder(m_h5, patch_size=9)


def test_missing_tensor_is_named(tmp_path, m_groups):
    groups = {g: dict(w) for g, w in m_groups.items()}
    del groups["encoder_layer_2_transformer"]["encoder_layer_2_ff1/bias"]
    path = ref.write_encoder_h5(tmp_path / "broken.h5", groups)
    with pytest.raises(WeightsError, match=r"broken\.h5: .*missing \['blocks\.1\.ff1\.bias'\]"):
        load_encoder(path)


def test_wrong_shape_is_reported(tmp_path, m_groups):
    groups = {g: dict(w) for g, w in m_groups.items()}
    groups["encoder_layer_1_transformer"]["encoder_layer_1_ff2/bias"] = np.zeros(95, np.float32)
    path = ref.write_encoder_h5(tmp_path / "broken.h5", groups)
    with pytest.raises(WeightsError, match=r"blocks\.0\.ff2\.bias has shape \(95,\), expected \(96,\)"):
        load_encoder(path)


def test_ambiguous_tensors_are_refused(tmp_path, m_groups):
    groups = {**m_groups, "time_distributed": {"dense/kernel": np.zeros((18, 96), np.float32)}}
    path = ref.write_keras_h5(tmp_path / "twice.h5", groups, list(groups))
    with pytest.raises(WeightsError, match="look like patch_embed.proj.weight"):
        load_encoder(path)


def test_keras3_weights_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((18, 96), np.float32))
    with pytest.raises(WeightsError, match="Keras 3 '.weights.h5'"):
        load_encoder(path)


@pytest.mark.parametrize("content", [b"", b"not weights at all", b"PK\x03\x04broken zip"])
def test_unreadable_files_raise_weights_error(tmp_path, content):
    path = tmp_path / "encoder.bin"
    path.write_bytes(content)
    with pytest.raises(WeightsError):
        load_encoder(path)
    with pytest.raises(WeightsError, match="not found"):
        load_encoder(tmp_path / "absent.safetensors")


def test_safetensors_round_trip_is_exact(tmp_path, m_h5):
    encoder = load_encoder(m_h5)
    save_encoder(encoder, tmp_path / "encoder.safetensors")
    again = load_encoder(tmp_path / "encoder.safetensors")
    assert _same_state(again, encoder) and again.spec == encoder.spec
    with safe_open(tmp_path / "encoder.safetensors", framework="pt") as f:
        assert f.metadata() == {"pat.variant": "PAT-M", "pat.patch_size": "18"}
    x = torch.randn(1, 18 * 20)
    with torch.inference_mode():
        assert torch.equal(again(x), encoder(x))


def test_conv_patch_size_of_a_custom_size_travels_in_metadata(tmp_path):
    encoder = PatEncoder(EncoderSpec(patch_size=10, num_heads=2, num_layers=1, conv=True))
    save_encoder(encoder, tmp_path / "custom.safetensors")
    assert load_encoder(tmp_path / "custom.safetensors").spec == encoder.spec
    with pytest.raises(WeightsError, match="patch size must be given"):
        encoder_from_state(encoder.state_dict())


def test_weights_only_torch_file_loads_and_pickled_objects_are_refused(tmp_path, m_h5):
    encoder = load_encoder(m_h5)
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    assert _same_state(load_encoder(tmp_path / "encoder.pt"), encoder)

    torch.save(encoder, tmp_path / "module.pt")  # a pickled nn.Module: refused, never unpickled
    with pytest.raises(WeightsError, match="not a weights-only torch file"):
        load_encoder(tmp_path / "module.pt")
    torch.save({"blocks": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match="dict of name -> tensor"):
        load_encoder(tmp_path / "odd.pt")


def test_head_round_trip_and_errors(tmp_path, m_h5):
    head = TaskHead()
    save_head(head, tmp_path / "head.safetensors")
    loaded = load_head(tmp_path / "head.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in head.state_dict().items())
    with pytest.raises(WeightsError, match="no fine-tuning head"):
        load_head(m_h5)
    save_encoder(load_encoder(m_h5), tmp_path / "encoder.safetensors")
    with pytest.raises(WeightsError, match="not a PAT task head"):
        load_head(tmp_path / "encoder.safetensors")


def test_read_keras_h5_maps_attention_kernels_per_head(tmp_path, m_groups, m_h5):
    encoder, head = read_keras_h5(m_h5)
    kernel = m_groups["encoder_layer_1_transformer"]["encoder_layer_1_attention/query/kernel"]  # (96, H, 96)
    q = encoder["blocks.0.attention.q.weight"].numpy()  # (H*96, 96): rows h*96..h*96+95 are head h
    np.testing.assert_array_equal(q[96 * 5:96 * 6], kernel[:, 5, :].T)
    assert head == {}


def test_convert_cli(tmp_path, rng, m_groups, capsys):
    path = ref.write_finetuned_h5(tmp_path / "finetuned.h5", m_groups, ref.random_head(rng))
    target, head = tmp_path / "out" / "encoder.safetensors", tmp_path / "out" / "heads" / "task.safetensors"
    assert convert.main([str(path), str(target), "--head", str(head)]) == 0
    assert "PAT-M, patch size 18, 993,440 parameters" in capsys.readouterr().out
    assert _same_state(load_encoder(target), load_encoder(path))
    assert isinstance(load_head(head), TaskHead)

    assert convert.main([str(tmp_path / "absent.h5"), str(target)]) == 1
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert.main([str(path), str(tmp_path / "encoder.bin")])


def test_convert_runs_as_a_module(tmp_path, m_h5):
    target = tmp_path / "encoder.safetensors"
    done = subprocess.run([sys.executable, "-m", "models.pat.convert", str(m_h5), str(target)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert load_encoder(target).spec.variant == "PAT-M"
