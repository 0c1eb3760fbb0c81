from models.pat.settings import PatSettings
from serve.server import close_handler, gunicorn_options, _loaded
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
