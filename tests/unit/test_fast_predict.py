"""models.xgboost.fast_predict calls XGBoosterPredictFromDense itself: it must give inplace_predict's bits, or step
aside."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from scipy.sparse import csr_matrix

from models.xgboost import fast_predict


def booster(objective: str, **params) -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = rng.integers(0, 3, 300) if objective.startswith("multi") else (x[:, 0] > 0).astype(float)
    return xgb.train({"objective": objective, "max_depth": 3, "nthread": 1, **params}, xgb.DMatrix(x, label=y), 20)


@pytest.mark.parametrize("objective, params", [("binary:logistic", {}), ("multi:softprob", {"num_class": 3}),
                                               ("reg:squarederror", {}), ("multi:softmax", {"num_class": 3})])
def test_same_bits_as_inplace_predict(objective, params):
    model = booster(objective, **params)
    rng = np.random.default_rng(1)
    for rows in (1, 2, 500):
        x = rng.normal(scale=3, size=(rows, 6))
        x[rng.random(x.shape) < 0.2] = np.nan
        for matrix in (x, x.astype(np.float32)):
            expected = model.inplace_predict(matrix)
            got = fast_predict.predict(model, matrix)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert got.tobytes() == expected.tobytes()
    assert fast_predict.agrees(model, 6)


def test_steps_aside_for_what_it_does_not_read():
    model = booster("binary:logistic")
    x = np.ones((4, 6))
    for other in (x[:, ::-1].T.T[::2], x.astype(np.int64), csr_matrix(x), x[0], x.tolist()):
        assert fast_predict.predict(model, other) is None


def test_a_wrong_width_is_an_xgboost_error_not_a_crash():
    with pytest.raises(xgb.core.XGBoostError):
        fast_predict.predict(booster("binary:logistic"), np.ones((1, 9)))


def test_the_reused_proxy_matrix_keeps_answers_exact_across_boosters_widths_and_threads():
    """One proxy per thread serves every booster (multi-model): interleaved widths and threads change no bit."""
    import threading

    models = [booster("binary:logistic"), booster("multi:softprob", num_class=3),
              xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(np.arange(90.0).reshape(10, 9),
                                                                    label=np.arange(10.0)), 5)]
    rng = np.random.default_rng(2)
    cases = [(model, rng.normal(size=(rows, model.num_features())))
             for _ in range(20) for model in models for rows in (1, 3)]
    expected = [model.inplace_predict(x).tobytes() for model, x in cases]
    failures, handles = [], set()

    def run():
        handles.add(fast_predict._proxy().value)
        for (model, x), want in zip(cases, expected):
            if fast_predict.predict(model, x).tobytes() != want:
                failures.append(x.shape)

    together = threading.Barrier(4)  # all alive at once: a freed proxy's address could be reused

    def in_thread():
        run()
        together.wait(timeout=60)

    threads = [threading.Thread(target=in_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run()
    assert not failures and len(handles) == 5  # four threads and this one, each with its own
