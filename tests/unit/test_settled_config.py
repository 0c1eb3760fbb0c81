"""A worker reads each of gunicorn's settings once (serve.workers.SettledConfig)."""

from __future__ import annotations

import pytest
from gunicorn.config import Config

from serve.workers import SettledConfig


def test_each_setting_is_read_from_gunicorn_once_and_keeps_its_value(monkeypatch):
    cfg = Config()
    cfg.set("keepalive", 75)
    line_limit = cfg.limit_request_line
    reads = []
    original = Config.__getattr__

    def counted(self, name):
        reads.append(name)
        return original(self, name)

    monkeypatch.setattr(Config, "__getattr__", counted)
    settled = SettledConfig(cfg)
    assert [settled.keepalive for _ in range(3)] == [75, 75, 75]
    assert [settled.limit_request_line for _ in range(3)] == [line_limit] * 3
    assert reads.count("keepalive") == 1 and reads.count("limit_request_line") == 1
    assert settled.is_ssl is cfg.is_ssl  # properties too


def test_an_unknown_setting_is_an_attribute_error_as_in_gunicorn():
    with pytest.raises(AttributeError):
        SettledConfig(Config()).no_such_setting
