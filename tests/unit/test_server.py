from gunicorn.http import errors

from models.pat.settings import PatSettings
from serve.server import close_handler, gunicorn_options, http_error, _loaded
from serve.settings import Settings


def test_gunicorn_options_follow_the_settings():
    options = gunicorn_options(Settings(port=9001, workers=3, timeout_seconds=120))
    assert options["bind"] == "0.0.0.0:9001" and options["workers"] == 3 and options["threads"] == 1
    assert options["timeout"] == 120 and options["graceful_timeout"] == 25
    assert options["control_socket_disable"] and options["accesslog"] is None
    multi = gunicorn_options(Settings(workers=2, multi_model=True))
    assert (multi["workers"], multi["threads"]) == (1, 8)
    pat = gunicorn_options(Settings(workers=4, handler="pat", family=PatSettings(max_batch_size=32)))
    assert (pat["workers"], pat["threads"]) == (1, 32)


def test_worker_exit_closes_what_the_worker_loaded():
    closed = []

    class Loaded:
        def close(self):
            closed.append(self)

    loaded = Loaded()
    _loaded.append(loaded)
    try:
        close_handler(server=None, worker=None)
    finally:
        _loaded.remove(loaded)
    assert closed == [loaded]


def test_http_layer_errors_have_gunicorns_statuses_and_name_no_bytes():
    assert http_error(errors.LimitRequestHeaders("X-Secret: 123")) == (
        431, "the request has more than 100 header fields or one longer than 8190 bytes")
    assert http_error(errors.LimitRequestLine(9000, 4094))[0] == 414
    assert http_error(errors.InvalidHeaderName("X Secret 123")) == (400, "malformed HTTP request: invalid header name")
    assert http_error(errors.InvalidResponseHeader("x"))[0] == 500 and http_error(ValueError("x"))[0] == 500
    options = gunicorn_options(Settings())
    assert (options["limit_request_line"], options["limit_request_fields"], options["limit_request_field_size"]) == \
        (4094, 100, 8190)
