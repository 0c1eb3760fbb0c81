"""Observability's parts: the settings the deploy gives (CloudWatch's rules), model versions, the line a request writes
(checked against the EMF specification), and the batcher's per-request figures."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from models.pat.batcher import DynamicBatcher
from serve import metrics, provenance
from serve.settings import Settings, SettingsError
from tests.conftest import train_model
from tests.http.emf_spec import check_line


def test_dimension_settings_are_read_as_given():
    settings = Settings.from_env({"SERVE_METRICS_ENDPOINT": "ep-1", "SERVE_METRICS_MODEL": "risk v2",
                                  "SERVE_METRICS_NAMESPACE": "Clinical/Inference #1", "SERVE_IMAGE_VERSION": "1.2"})
    assert settings.metric_dimensions == (("EndpointName", "ep-1"), ("ModelName", "risk v2"))
    assert settings.model_name == "risk v2" and settings.metrics_namespace == "Clinical/Inference #1"
    assert settings.image_version == "1.2" and settings.image_revision == "unknown" and settings.metrics
    defaults = Settings.from_env({})
    assert defaults.metric_dimensions == () and defaults.metrics_namespace == "ClinicalInference"
    assert not Settings.from_env({"SERVE_METRICS": "false"}).metrics


@pytest.mark.parametrize("env, message", [
    ({"SERVE_METRICS_ENDPOINT": ""}, "SERVE_METRICS_ENDPOINT must include at least one non-whitespace character"),
    ({"SERVE_METRICS_VARIANT": " \t"}, "SERVE_METRICS_VARIANT must include at least one non-whitespace"),
    ({"SERVE_METRICS_MODEL": "mod\u00e8le"}, "SERVE_METRICS_MODEL must hold printable ASCII characters only"),
    ({"SERVE_METRICS_MODEL": "a\x7fb"}, "SERVE_METRICS_MODEL must hold printable ASCII"),
    ({"SERVE_METRICS_ENDPOINT": "e" * 1025}, "SERVE_METRICS_ENDPOINT must be at most 1024 characters"),
    ({"SERVE_METRICS_NAMESPACE": "AWS/SageMaker"}, "must not begin with AWS/"),
    ({"SERVE_METRICS_NAMESPACE": "n" * 256}, "SERVE_METRICS_NAMESPACE must be 1 to 255 characters"),
    ({"SERVE_METRICS_NAMESPACE": "a+b"}, "SERVE_METRICS_NAMESPACE must be 1 to 255 characters"),
    ({"SERVE_METRICS": "sometimes"}, "SERVE_METRICS must be true or false"),
    ({"SERVE_IMAGE_REVISION": "r\u00e9v"}, "SERVE_IMAGE_REVISION must be at most 200 printable ASCII"),
])
def test_bad_observability_settings_are_refused(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_longest_dimension_value_cloudwatch_takes_is_accepted():
    assert Settings.from_env({"SERVE_METRICS_VARIANT": "v" * 1024}).metric_dimensions == (("VariantName", "v" * 1024),)


def test_a_version_is_metadata_s_else_a_hash_of_the_content(tmp_path):
    model_dir = train_model(tmp_path / "m", "binary:logistic")
    first = provenance.model_version(model_dir)
    assert first == provenance.content_hash(model_dir) and first.startswith("sha256:")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text("# a change\n")
    assert provenance.model_version(model_dir) != first, "any file of the artifact changes the version"
    (model_dir / "metadata.json").write_text(json.dumps({"model_version": 12}))
    assert provenance.model_version(model_dir) == "12"
    (model_dir / "metadata.json").write_text(json.dumps({"feature_names": ["a"]}))
    assert provenance.model_version(model_dir).startswith("sha256:")


def test_names_that_are_not_ascii_are_percent_encoded_in_headers(tmp_path):
    identity = provenance.loaded(Settings(multi_model=True, multi_model_dir=tmp_path, model_name="mme"),
                                 train_model(tmp_path / "m", "binary:logistic"), target="m\u00fc/1")
    headers = dict(identity.headers)
    assert headers["X-Target-Model"] == "m%C3%BC%2F1" and headers["X-Model-Name"] == "mme"
    assert identity.fields["target_model"] == "m\u00fc/1"
    assert all(value.isascii() for value in headers.values())


def written_lines(settings: Settings, write) -> list[str]:
    read, out = os.pipe()
    recorder = metrics.Recorder(settings, fd=out)
    write(recorder)
    os.close(out)
    with os.fdopen(read) as stream:
        return stream.read().splitlines()


def test_a_line_is_one_emf_record_with_the_deploy_s_dimensions():
    settings = Settings(metric_dimensions=(("EndpointName", "ep"), ("VariantName", "AllTraffic")))
    identity = provenance.endpoint(settings)
    invocation = metrics.Invocation()
    for stage in metrics.STAGES:
        invocation.lap(stage)
    invocation.values.update(Rows=3, QueueWait=1.5, BatchSize=4, DeviceMemoryBytes=1 << 30)

    def write(recorder):
        recorder.write(invocation, 200, identity, recorder.request_id())
        recorder.write(None, 503, identity, recorder.request_id())

    lines = written_lines(settings, write)
    assert len(lines) == 2
    first, second = (check_line(line) for line in lines)
    directive, = first["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["EndpointName", "VariantName"]]
    assert {m["Name"] for m in directive["Metrics"]} == set(metrics.METRICS)
    assert abs(first["_aws"]["Timestamp"] / 1000 - time.time()) < 60
    assert first["request_id"] != second["request_id"]
    assert (second["Status5xx"], second["Status2xx"], second["Requests"]) == (1, 0, 1)


def test_records_off_write_the_log_line_alone_and_nothing_below_info():
    identity = provenance.endpoint(Settings())
    line, = written_lines(Settings(metrics=False), lambda r: r.write(metrics.Invocation(), 200, identity, "id"))
    assert "_aws" not in line and json.loads(line)["status"] == 200
    assert written_lines(Settings(metrics=False, log_level="warning"),
                         lambda r: r.write(metrics.Invocation(), 200, identity, "id")) == []


def test_rows_are_told_by_arrays_and_lists_only():
    assert metrics.rows_of(np.zeros((5, 2))) == 5 and metrics.rows_of([{}, {}]) == 2
    assert metrics.rows_of({"a": 1}) is None and metrics.rows_of(np.float32(1)) is None


def test_the_batcher_tells_each_job_its_queue_wait_and_batch_size():
    def run(key, parts):
        time.sleep(0.01)
        return {"x": np.concatenate(parts)}

    batcher = DynamicBatcher(run, max_rows=8, max_wait_s=0.5)  # both jobs join one batch
    try:
        futures = [batcher.submit("k", np.ones((n, 2))) for n in (2, 3)]
        for future in futures:
            future.result(10)
    finally:
        batcher.close()
    assert [future.batch_rows for future in futures] == [5, 5]
    assert all(0 <= future.queue_wait_s < 5 for future in futures)


def test_with_a_model_dimension_the_metrics_are_also_kept_per_endpoint_and_variant_for_the_dashboards():
    settings = Settings(metric_dimensions=(("EndpointName", "ep"), ("VariantName", "AllTraffic"),
                                           ("ModelName", "risk")))
    lines = written_lines(settings, lambda recorder: recorder.write(metrics.Invocation(), 200,
                                                                    provenance.endpoint(settings),
                                                                    recorder.request_id()))
    directive, = check_line(lines[0])["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["EndpointName", "VariantName", "ModelName"], ["EndpointName", "VariantName"]]


def test_the_log_search_leaves_out_only_the_servers_clock_figures():
    from tests.http.emf_spec import without_clock_figures

    line = json.dumps({"message": "invocation", "target_model": "m-86420", "ReadTime": 0.2086420, "Rows": 86420,
                       "latency_ms": 86420.1, "_aws": {"Timestamp": 1796536864201, "CloudWatchMetrics": []}})
    searched = without_clock_figures("plain 86420 text\n" + line)
    assert searched.count("86420") == 3  # the plain line, the target's name and the row count; no clock figure
