"""The model artifact directory: discovery, config, heads, standardization, errors, the example build."""

from __future__ import annotations

import json
import os
import stat
import tarfile

import numpy as np
import pytest
import torch

from models.pat import examples
from models.pat.artifact import (
    ArtifactConfig,
    ArtifactError,
    Standardization,
    load_artifact,
    save_artifact,
)
from models.pat.network import PatEncoder, TaskHead, spec_for
from models.pat.weights import save_head
from tests.unit import pat_reference as ref

WEEK = 10080


@pytest.fixture(scope="module")
def s_groups():
    return ref.random_encoder(np.random.default_rng(3), "S")


@pytest.fixture
def dropped_in(tmp_path, s_groups):
    """What a user does with the authors' file: put it alone in the model directory."""
    ref.write_encoder_h5(tmp_path / "PAT-S_29k_weights.h5", s_groups)
    return tmp_path


@pytest.fixture
def full(tmp_path):
    torch.manual_seed(0)
    heads = {"depression": TaskHead().eval(), "ssri": TaskHead().eval()}
    config = ArtifactConfig(variant="PAT-S", pretrained=False, description="test",
                            tasks={"ssri": {"threshold": 0.3}, "depression": {"threshold": 0.6}})
    stats = Standardization.checked(np.arange(WEEK, dtype=np.float32), np.full(WEEK, 2.0))
    save_artifact(tmp_path, PatEncoder(spec_for("PAT-S")).eval(), heads, config, stats)
    return tmp_path, heads


def _write_config(model_dir, **config):
    (model_dir / "config.json").write_text(json.dumps(config))


def test_the_authors_file_alone_is_an_artifact(dropped_in):
    artifact = load_artifact(dropped_in)
    assert artifact.variant == "PAT-S" and artifact.patch_size == 18
    assert artifact.heads == {} and artifact.standardization is None
    x = np.random.default_rng(0).normal(size=(1, WEEK))
    np.testing.assert_array_equal(artifact.standardize(x), x.astype(np.float32))
    assert not artifact.encoder.training


def test_full_artifact_round_trip(full):
    model_dir, heads = full
    artifact = load_artifact(model_dir)
    assert list(artifact.heads) == ["ssri", "depression"]  # config order
    assert artifact.thresholds == {"ssri": 0.3, "depression": 0.6}
    assert artifact.config.pretrained is False and artifact.config.variant == "PAT-S"
    embedding = torch.randn(3, 96)
    with torch.inference_mode():
        scores = artifact.scores(embedding)
        for name, head in heads.items():
            assert torch.equal(scores[name], head(embedding))
    activity = np.full((2, WEEK), 10.0)
    np.testing.assert_allclose(artifact.standardize(activity)[0, :3], [5.0, 4.5, 4.0])


def test_heads_without_config_entries_get_the_default_threshold(dropped_in):
    (dropped_in / "heads").mkdir()
    save_head(TaskHead(), dropped_in / "heads" / "sleep_disorder.safetensors")
    assert load_artifact(dropped_in).thresholds == {"sleep_disorder": 0.5}


def test_keras_finetuned_file_serves_as_a_head(dropped_in, s_groups):
    (dropped_in / "heads").mkdir()
    ref.write_finetuned_h5(dropped_in / "heads" / "benzodiazepine.h5", s_groups,
                           ref.random_head(np.random.default_rng(1)))
    assert list(load_artifact(dropped_in).heads) == ["benzodiazepine"]


@pytest.mark.parametrize(("config", "message"), [
    ({"variant": "PAT-M"}, "config.json says PAT-M, the weights are PAT-S"),
    ({"variant": "PAT-XL"}, "unknown PAT variant"),
    ({"patch_size": 9}, "patch size 18, not the configured 9"),
    ({"patch_size": "18"}, "'patch_size' must be an integer"),
    ({"format_version": 2}, "format_version 2 is not supported"),
    ({"tasks": {"depression": {}}}, r"lists task\(s\) \['depression'\] with no file in heads/"),
    ({"tasks": {"depression": {"threshold": 1.5}}}, "threshold must be a number in"),
    ({"tasks": {"bad name": {}}}, "task name 'bad name'"),
    ({"encoder": "../PAT-S_29k_weights.h5"}, "must be a file name in the model directory"),
    ({"encoder": "/etc/hostname"}, "must be a file name in the model directory"),
    ({"encoder": "other.safetensors"}, "'other.safetensors' named in config.json not found"),
])
def test_config_errors(dropped_in, config, message):
    _write_config(dropped_in, **config)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(dropped_in)


def test_unparseable_config(dropped_in):
    (dropped_in / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(dropped_in)
    (dropped_in / "config.json").write_text("[]")
    with pytest.raises(ArtifactError, match="must hold a JSON object"):
        load_artifact(dropped_in)


def test_unknown_config_keys_are_kept(dropped_in):
    _write_config(dropped_in, minute_zero="midnight")
    assert load_artifact(dropped_in).config.extra == {"minute_zero": "midnight"}


def test_encoder_discovery(tmp_path, dropped_in, s_groups):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="no encoder weights"):
        load_artifact(empty)
    ref.write_encoder_h5(dropped_in / "PAT-S_21k_weights.h5", s_groups)
    with pytest.raises(ArtifactError, match="several weight files"):
        load_artifact(dropped_in)
    _write_config(dropped_in, encoder="PAT-S_21k_weights.h5")
    assert load_artifact(dropped_in).variant == "PAT-S"


def test_corrupt_encoder_is_an_artifact_error(tmp_path):
    (tmp_path / "encoder.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(ArtifactError, match="encoder.safetensors"):
        load_artifact(tmp_path)


def test_head_errors(dropped_in):
    heads = dropped_in / "heads"
    heads.mkdir()
    save_head(TaskHead(embed_dim=64), heads / "depression.safetensors")
    with pytest.raises(ArtifactError, match="head takes 64 features, the encoder gives 96"):
        load_artifact(dropped_in)
    (heads / "depression.safetensors").unlink()
    (heads / "ssri.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="heads/ssri.safetensors"):
        load_artifact(dropped_in)
    (heads / "ssri.safetensors").unlink()
    save_head(TaskHead(), heads / "ssri.pt")
    save_head(TaskHead(), heads / "ssri.safetensors")
    with pytest.raises(ArtifactError, match="two files for task 'ssri'"):
        load_artifact(dropped_in)


def test_scalar_standardization(dropped_in):
    np.savez(dropped_in / "standardization.npz", mean=np.float32(100.0), std=np.array([50.0]))
    artifact = load_artifact(dropped_in)
    assert artifact.standardization.minutes is None
    np.testing.assert_allclose(artifact.standardize(np.full((1, 18 * 3), 200.0)), 2.0)


def test_per_minute_standardization_refuses_other_lengths(full):
    artifact = load_artifact(full[0])
    with pytest.raises(ValueError, match="per minute of a 10080-minute sequence"):
        artifact.standardize(np.zeros((1, 18 * 10)))


@pytest.mark.parametrize(("arrays", "message"), [
    ({"mean": np.zeros(WEEK)}, r"missing array\(s\) \['std'\]"),
    ({"mean": np.zeros(WEEK), "std": np.zeros(WEEK)}, "std must be positive"),
    ({"mean": np.full(WEEK, np.nan), "std": np.ones(WEEK)}, "mean has non-finite values"),
    ({"mean": np.zeros(WEEK), "std": np.ones(WEEK - 18)}, "mean has 10080 values, std 10062"),
    ({"mean": np.zeros((7, 1440)), "std": np.ones(1)}, r"mean must be a scalar or 1-D, got shape \(7, 1440\)"),
    ({"mean": np.zeros(100), "std": np.ones(100)}, "100 minutes is not a multiple of the patch size 18"),
    ({"mean": np.array(["a"]), "std": np.ones(1)}, "mean must be numeric"),
    ({"mean": np.array([{}], dtype=object), "std": np.ones(1)}, "not a readable .npz"),  # pickled: refused
])
def test_standardization_errors(dropped_in, arrays, message):
    np.savez(dropped_in / "standardization.npz", **arrays)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(dropped_in)


def test_errors_are_value_errors():
    assert issubclass(ArtifactError, ValueError)


def test_example_build_is_a_loadable_labelled_artifact(tmp_path):
    out = tmp_path / "pat"
    assert examples.main(["--out", str(out), "--subjects", "48", "--steps", "5"]) == 0
    artifact = load_artifact(out)
    assert artifact.variant == "PAT-S" and artifact.config.pretrained is False
    description = artifact.config.description
    assert description.startswith("EXAMPLE ONLY") and "randomly initialized" in description
    assert list(artifact.heads) == list(examples.TASKS)
    assert artifact.standardization.minutes == WEEK

    weeks, _ = examples.synthetic_weeks(2, np.random.default_rng(5))
    assert weeks.shape == (2, WEEK) and (weeks >= 0).all()
    with torch.inference_mode():
        scores = artifact.scores(artifact.encoder.embed(torch.from_numpy(artifact.standardize(weeks))))
    assert all(((s > 0) & (s < 1)).all() for s in scores.values())

    with tarfile.open(tmp_path / "pat.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "config.json" in names and "encoder.safetensors" in names

    request = json.loads((tmp_path / "pat.sample.json").read_text())
    assert request["outputs"] == ["embedding", "scores", "metrics"] and len(request["instances"]) == 1
    activity = request["instances"][0]["activity"]
    assert len(activity) == WEEK and all(isinstance(count, int) and count >= 0 for count in activity)

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not an earlier example build"):
        examples.main(["--out", str(other), "--subjects", "8", "--steps", "1"])
    assert (other / "notes.txt").exists()


def test_the_example_is_readable_by_a_server_running_as_another_user(tmp_path):
    """docker run --user 1000:1000 reads the mounted files: 0644 files, 0755 directories, whatever the umask
    (safetensors writes 0600), and the same modes in model.tar.gz."""
    out = tmp_path / "pat"
    previous = os.umask(0o077)
    try:
        assert examples.main(["--out", str(out), "--subjects", "16", "--steps", "1"]) == 0
    finally:
        os.umask(previous)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert "heads/depression.safetensors" in modes and "encoder.safetensors" in modes
    assert {name: mode for name, mode in modes.items() if mode != (0o755 if (out / name).is_dir() else 0o644)} == {}
    with tarfile.open(tmp_path / "pat.tar.gz") as tar:
        assert {member.mode for member in tar.getmembers()} == {0o644}


def test_synthetic_weeks_have_a_daily_rhythm():
    weeks, _ = examples.synthetic_weeks(40, np.random.default_rng(0))
    by_hour = weeks.reshape(40, 7, 24, 60).mean(axis=(0, 1, 3))
    assert by_hour[2:5].mean() < 0.2 * by_hour[13:17].mean()  # nights still, afternoons active
