"""Generated hostile requests against real `serve` processes (XGBoost, 2 workers; and a multi-model endpoint).

Every content type (well-formed, mutated and random bodies), Content-Type and Accept form (the mark planted in their
types and parameters too), custom-attributes form, header size, and the multi-model API. Every response must be 2xx,
or 4xx with a one-line JSON error; no 5xx; no worker restarts; /ping 200 throughout (polled from another thread); no
request value in any log line, nor in any metric record (each one checked against the EMF specification).

Profiles: FUZZ_CASES (default 3000, a minute or two here; the long profile is FUZZ_CASES=50000) is the number of cases
over all generators, FUZZ_SEED (default 20261201) seeds them. Figures go to build/reliability/generative.json.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st

from serve import recordio
from tests.conftest import FEATURES, ROOT, train_model
from tests.http.emf_spec import check_line, without_clock_figures
from serve.process import ServeProcess

CASES = int(os.environ.get("FUZZ_CASES", "3000"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
SHARES = {"invocations": 0.75, "multi_model": 0.25}  # of CASES
REPORT = ROOT / "build" / "reliability" / "generative.json"

MARK_NUMBER = 86420.13579  # sent as a feature value in many bodies: it must never appear in a log
MARK_TEXT = "zq-secret-86420"  # sent in bodies, attributes and headers: likewise


def fuzz_settings(share: str, per_example: int = 1):
    """Hypothesis settings for `share` of CASES, `per_example` requests sent for each generated example."""
    return settings(max_examples=max(1, math.ceil(CASES * SHARES[share] / per_example)), deadline=None, database=None,
                    phases=[Phase.generate], suppress_health_check=list(HealthCheck))


# --- bodies ---------------------------------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([MARK_NUMBER, 0, -0.0, 3.4028235e38, 3.4028236e38, 1e-320, 5e-324]),
)
moderate = st.floats(min_value=-1e6, max_value=1e6)
text_field = st.one_of(st.sampled_from(["nan", "inf", "-Infinity", "1e999", "0x10", "1_0", '"1"', MARK_TEXT, " ", "\t",
                                        "\x00", "١٢", "1e5", "--1", "1,5", "é"]), st.text(max_size=6))
field = st.one_of(numbers.map(repr), text_field, st.just(""))


@st.composite
def csv_body(draw) -> bytes:
    width = draw(st.sampled_from([4, 4, 4, 1, 3, 5]))
    kind = draw(st.integers(0, 9))
    if kind < 4:  # what a client means to send
        rows = draw(st.lists(st.lists(moderate.map(repr), min_size=4, max_size=4), min_size=1, max_size=8))
    elif kind < 6:  # numbers of every kind
        rows = draw(st.lists(st.lists(numbers.map(repr), min_size=width, max_size=width), min_size=1, max_size=8))
    else:
        rows = draw(st.lists(st.lists(field, min_size=max(0, width - 1), max_size=width + 1), min_size=1, max_size=8))
    if draw(st.integers(0, 20)) == 0:  # wide
        rows = [row * draw(st.integers(10, 3000)) for row in rows]
    newline = draw(st.sampled_from(["\n", "\r\n", "\n\n", "\r"]))
    text = newline.join(",".join(row) for row in rows) + draw(st.sampled_from(["", "\n", ",", " \n"]))
    if draw(st.integers(0, 20)) == 0:
        text = "," * draw(st.integers(1000, 200_000)) + "\n" + "1,2\n" * draw(st.integers(1, 2000))  # ragged
    return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else text.encode("utf-8", "replace")


json_scalar = st.one_of(st.none(), st.booleans(), numbers.filter(lambda n: isinstance(n, int) or np.isfinite(n)),
                        st.text(max_size=8), st.just(MARK_TEXT))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                               st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                          max_leaves=10)
feature_names = st.sampled_from(FEATURES + ["unknown", "x" * 100, ""])  # names are echoed (cut): no marks


@st.composite
def instance(draw):
    if draw(st.integers(0, 9)) < 5:  # what a client means to send
        return draw(st.one_of(st.lists(moderate, min_size=4, max_size=4),
                              st.fixed_dictionaries(dict.fromkeys(FEATURES, st.one_of(moderate, st.none())))))
    row = st.lists(st.one_of(numbers.filter(lambda n: isinstance(n, int) or np.isfinite(n)), st.none()),
                   min_size=3, max_size=5)
    return draw(st.one_of(row, st.fixed_dictionaries({"features": row}),
                          st.dictionaries(feature_names, st.one_of(numbers.filter(
                              lambda n: isinstance(n, int) or np.isfinite(n)), st.none(), st.text(max_size=4)),
                              min_size=3, max_size=6),
                          json_value))


@st.composite
def json_document(draw):
    document = draw(st.one_of(
        st.fixed_dictionaries({"instances": st.lists(instance(), max_size=4)},
                              optional={"contributions": json_value, "top_k": json_value}),
        st.lists(instance(), max_size=4),
        json_value,
    ))
    return document


def _json_bytes(document) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


@st.composite
def json_body(draw) -> bytes:
    body = _json_bytes(draw(json_document()))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return body[:draw(st.integers(0, len(body)))]  # cut short
    if kind == 1:
        depth = draw(st.integers(100, 5000))
        return b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    return body


@st.composite
def jsonlines_body(draw) -> bytes:
    lines = draw(st.lists(instance(), min_size=1, max_size=6))
    body = b"\n".join(_json_bytes(line) for line in lines)
    return body + b"\n{broken" if draw(st.integers(0, 9)) == 0 else body


def _npy_bytes(array: np.ndarray, version=(1, 0)) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
    return buffer.getvalue()


npy_header = st.one_of(
    st.builds(lambda d, f, s: f"{{'descr': {d!r}, 'fortran_order': {f}, 'shape': {s}, }}",
              st.sampled_from(["<f8", "<f4", "<i8", "|u1", "|b1", ">f8", "<c16", "|O", "<U3", "<f16", "V8", "<M8"]),
              st.sampled_from(["False", "True", "0", "'x'"]),
              st.one_of(st.tuples(st.integers(-2, 2 ** 66)), st.tuples(st.integers(0, 10), st.integers(0, 2 ** 65)),
                        st.lists(st.integers(0, 5), max_size=40).map(tuple))),
    st.text(max_size=300),
    st.builds(lambda n: "{'descr': '<f8', 'shape': (" + "-" * n + "1,), 'fortran_order': False}",
              st.integers(1, 3000)),
    st.builds(lambda n: "{'descr': '<f8', 'shape': " + "(" * n + ")" * n + ", 'fortran_order': False}",
              st.integers(1, 300)),
)


@st.composite
def npy_body(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        shape = draw(st.sampled_from([(1, 4), (3, 4), (4,), (2, 3), (0, 4), (1, 4, 1), ()]))
        dtype = draw(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_, np.float16]))
        values = draw(st.lists(st.one_of(moderate, numbers), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        with np.errstate(all="ignore"):
            array = np.array([float(v) for v in values], dtype=np.float64).astype(dtype).reshape(shape)
        body = _npy_bytes(array, draw(st.sampled_from([(1, 0), (2, 0), (3, 0)])))
        return body if draw(st.booleans()) else body[:draw(st.integers(0, len(body)))]
    header = draw(npy_header).encode("utf-8", "replace") + b"\n"
    version = draw(st.sampled_from([1, 2, 3, 7]))
    size = struct.pack("<H", len(header) % 65536) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header + draw(st.binary(max_size=64))


@st.composite
def libsvm_body(draw) -> bytes:
    if draw(st.integers(0, 9)) < 4:  # what a client means to send
        rows = draw(st.lists(st.dictionaries(st.integers(0, 3), moderate, max_size=4), min_size=1, max_size=5))
        return "\n".join("1 " + " ".join(f"{i}:{v!r}" for i, v in sorted(row.items())) for row in rows).encode()
    index = st.one_of(st.integers(-3, 6), st.integers(0, 2 ** 70), st.sampled_from(["a", "", "1.5", "٣", "-0"]))
    value = st.one_of(numbers.map(repr), text_field)
    pair = st.builds(lambda i, v, form: form.format(i=i, v=v), index, value,
                     st.sampled_from(["{i}:{v}", "{i}:{v}", "{i}:{v}", "{i}", "{i}:{v}:{v}", ":{v}"]))
    lines = draw(st.lists(st.lists(pair, max_size=6), min_size=1, max_size=5))
    return "\n".join(draw(st.sampled_from(["", "1 ", "x "])) + " ".join(line) for line in lines).encode("utf-8", "replace")


@st.composite
def recordio_body(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        rows = draw(st.lists(st.lists(st.one_of(moderate, numbers), min_size=3, max_size=5), min_size=1, max_size=4))
        records = []
        for row in rows:
            record = recordio.Record()
            tensor = record.features["values"].float64_tensor
            tensor.values.extend(float(v) for v in row)
            if draw(st.booleans()):
                tensor.keys.extend(draw(st.lists(st.integers(0, 2 ** 64 - 1), min_size=len(row), max_size=len(row))))
            if draw(st.booleans()):
                tensor.shape.extend(draw(st.lists(st.integers(0, 2 ** 64 - 1), max_size=2)))
            records.append(record)
        return recordio.frame(records)
    body = recordio.encode_features(np.ones((2, 4)))
    if kind == 1:  # flipped bytes
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == 2:
        return body[:draw(st.integers(0, len(body)))]
    return draw(st.binary(max_size=200))


BODIES = {
    "text/csv": csv_body(),
    "application/json": json_body(),
    "application/jsonlines": jsonlines_body(),
    "application/x-npy": npy_body(),
    "text/libsvm": libsvm_body(),
    "application/x-recordio-protobuf": recordio_body(),
}

# --- headers --------------------------------------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)


def marked(*templates: str):
    """Header values with the mark in the type, the subtype, a parameter's name or its value (also upper-cased, and
    after generated text): a 415 or 406 must name what is supported, never what was sent."""
    return st.one_of(st.sampled_from([t.format(m=MARK_TEXT) for t in templates]
                                     + [t.format(m=MARK_TEXT.upper()) for t in templates]),
                     st.builds(lambda text, template: template.format(m=text + MARK_TEXT), header_text,
                               st.sampled_from(templates)))


content_type_forms = st.one_of(
    marked("{m}/csv", "text/{m}", "{m}", "text/csv; charset={m}", "text/csv; label_size={m}", "text/csv; {m}=1",
           "text/libsvm; indexing={m}", "text/libsvm; charset=\"{m}\"", "application/json; {m}=1", "image/png; x={m}",
           "application/x-npy; x=\"{m}; y\""),
    st.sampled_from(list(BODIES)),
    st.sampled_from(["csv", "json", "jsonlines", "npy", "libsvm", "recordio-protobuf", "application/jsonl",
                     "TEXT/CSV", "text/csv; charset=utf-8", "text/csv; charset=latin-1", "text/csv; label_size=1",
                     "text/csv; label_size=2", "text/libsvm; indexing=1", "text/libsvm; indexing=2",
                     "application/json; charset=UTF-8", "image/png", "*/*", "", "text/csv;;", "text/csv; x=\"y"]),
    header_text,
)
accept_forms = st.one_of(
    marked("{m}/html", "text/{m}", "{m}", "text/html; {m}=1", "text/html; q=0.5; x={m}",
           "image/png, application/{m};q=0.9", "application/json; x={m}", "*/*; x=\"{m}\"", "text/csv;q=0, {m}/*"),
    st.none(), st.none(), st.none(), st.sampled_from(["*/*", "application/json", "text/csv"]),
    st.sampled_from(["*/*", "application/json", "text/csv", "application/jsonlines", "application/x-npy",
                     "application/x-recordio-protobuf", "text/*", "application/*", "image/png", "csv", "json",
                     "application/json;q=0.5, text/csv;q=0.9", "text/csv;q=0, */*;q=0.1", "image/png, */*;q=0",
                     "application/x-npy;q=abc", ";;;", ",", "*/*;q=0"]),
    header_text,
)
attribute_forms = st.one_of(
    st.none(), st.none(), st.none(),
    st.sampled_from(["contributions=true", "contributions=true;top_k=2", "contributions=yes; top_k=0",
                     "top_k=-1", "top_k=99999999999999999999999", "top_k=abc;contributions=1", "contributions",
                     "=;=;", "contributions=true,top_k=3", f"note={MARK_TEXT}", "outputs=embedding"]),
    st.lists(st.tuples(header_text, header_text), max_size=6).map(lambda pairs: ";".join(f"{k}={v}" for k, v in pairs)),
)
pad_sizes = st.sampled_from([0, 100, 4000, 8100, 8170, 8190, 8191, 9000, 20000])


@st.composite
def headers(draw, content_type: str) -> dict:
    chosen = {"Content-Type": content_type if draw(st.integers(0, 9)) < 7 else draw(content_type_forms)}
    for name, forms in (("Accept", accept_forms), ("X-Amzn-SageMaker-Custom-Attributes", attribute_forms)):
        value = draw(forms)
        if value is not None:
            chosen[name] = value
    if draw(st.integers(0, 9)) == 0:  # header sizes about gunicorn's limits (8190 bytes a field, 100 fields)
        pad = draw(pad_sizes)
        chosen["X-Pad"] = (MARK_TEXT * (pad // len(MARK_TEXT) + 1))[:pad]
        for i in range(draw(st.sampled_from([0, 5, 97, 98, 99, 120]))):
            chosen[f"X-Extra-{i}"] = MARK_TEXT
    return chosen


# --- checking --------------------------------------------------------------------------------------------------------


class Tally:
    """What the servers answered: statuses per case kind, and every response that broke the rules."""

    def __init__(self):
        self.statuses: Counter = Counter()
        self.kinds: Counter = Counter()
        self.violations: list[str] = []
        self.progress = None

    def send(self, session: requests.Session, kind: str, method: str, url: str, chosen: dict, body: bytes) -> None:
        try:
            response = session.request(method, url, data=body, headers=chosen, timeout=60)
        except requests.exceptions.InvalidHeader:
            return  # requests itself refuses the header: nothing reached the server
        except requests.ConnectionError as error:
            self.statuses["connection error"] += 1
            self.violations.append(f"{kind}: connection error {type(error).__name__}: {str(error)[:200]}")
            return
        self.check(kind, response)

    def check(self, kind: str, response: requests.Response) -> None:
        self.statuses[response.status_code] += 1
        if self.progress and sum(self.statuses.values()) % 5000 == 0:
            self.progress()  # figures so far, for long runs
        self.kinds[f"{kind} {response.status_code // 100}xx"] += 1
        problem = None
        if response.status_code >= 500:
            problem = "5xx"
        elif response.status_code >= 400:
            body = response.content
            if response.headers.get("Content-Type") != "application/json" or body.count(b"\n") > 0:
                problem = "error is not one line of JSON"
            else:
                try:
                    error = json.loads(body)
                    if error.get("code") != response.status_code or not error.get("error"):
                        problem = "error body lacks code/error"
                except ValueError:
                    problem = "error body is not JSON"
            if MARK_TEXT.encode() in body.lower() or repr(MARK_NUMBER).encode() in body:
                problem = "error echoes a request value"
        elif not 200 <= response.status_code < 300:
            problem = "neither 2xx nor 4xx"
        if problem and len(self.violations) < 50:
            self.violations.append(f"{kind}: {response.status_code} {problem}: {response.content[:300]!r}")


class Pinger(threading.Thread):
    """Polls /ping every 250 ms while the cases run; counts answers that are not 200."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.running, self.polls, self.failures = url, True, 0, []

    def run(self) -> None:
        session = requests.Session()
        while self.running:
            try:
                status = session.get(self.url + "/ping", timeout=10).status_code
            except requests.RequestException as error:
                status = type(error).__name__
            self.polls += 1
            if status != 200:
                self.failures.append(status)
            time.sleep(0.25)

    def stop(self) -> None:
        self.running = False
        self.join(15)


def assert_logs_clean(server: ServeProcess, workers: int) -> dict:
    logs = server.logs()
    lines = logs.splitlines()
    for line in lines:
        json.loads(line)
    searched = without_clock_figures(logs)
    assert MARK_TEXT not in searched and "86420" not in searched, "a request value reached the log"
    records = [line for line in lines if '"_aws"' in line]
    assert records, "no metric record was written"
    for line in records:
        searched = without_clock_figures(line)
        assert MARK_TEXT not in searched.lower() and "86420" not in searched, "a request value reached a metric record"
        check_line(line)
    booted = sum("Booting worker" in line for line in lines)
    assert booted == workers, f"workers booted {booted} times for {workers} workers: a worker restarted"
    return {"log_lines": len(lines), "metric_records": len(records), "worker_boots": booted}


def write_report(name: str, figures: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[name] = {"cases_setting": CASES, "seed": SEED, **figures}
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def figures_of(tally: Tally, pinger: Pinger, started: float) -> dict:
    return {"requests": sum(tally.statuses.values()), "seconds": round(time.monotonic() - started, 1),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items(), key=str)}, "by_kind": dict(tally.kinds),
            "status_5xx": sum(v for k, v in tally.statuses.items() if isinstance(k, int) and k >= 500),
            "violations": len(tally.violations), "ping_polls": pinger.polls, "ping_failures": len(pinger.failures)}


def run_and_check(server: ServeProcess, workers: int, name: str, tally: Tally, cases) -> None:
    pinger = Pinger(server.url)
    pinger.start()
    started = time.monotonic()
    tally.progress = lambda: write_report(name, {**figures_of(tally, pinger, started), "complete": False})
    try:
        cases()
    finally:
        pinger.stop()
    figures = figures_of(tally, pinger, started)
    figures.update(assert_logs_clean(server, workers), complete=True)
    write_report(name, figures)
    print(f"\n{name}: {json.dumps(figures)}")
    assert not tally.violations, "\n".join(tally.violations[:20])
    assert not pinger.failures, f"/ping answered {pinger.failures[:10]}"
    assert figures["requests"] >= CASES * SHARES[name] * 0.9


# --- the single-model endpoint --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(risk_dir, tmp_path_factory):
    process = ServeProcess({"SM_MODEL_DIR": str(risk_dir)}, tmp_path_factory.mktemp("fuzz") / "serve.log")
    yield process.wait_ready()
    process.stop()


@st.composite
def invocation(draw):
    content_type = draw(st.sampled_from(list(BODIES)))
    body = draw(st.one_of(BODIES[content_type], st.binary(max_size=300))) if draw(st.integers(0, 9)) else b""
    return content_type, draw(headers(content_type)), body


ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# Each generated body goes with its generated headers and with these (every output kind for every body).
HEADER_VARIANTS = [{}, {"Accept": "application/json", ATTRIBUTES: "contributions=true;top_k=2"},
                   {"Accept": "application/x-npy", ATTRIBUTES: "contributions=true"}]


def test_generated_invocations(server):
    tally, session = Tally(), requests.Session()

    @seed(SEED)
    @fuzz_settings("invocations", per_example=1 + len(HEADER_VARIANTS))
    @given(invocation())
    def one(case):
        content_type, chosen, body = case
        tally.send(session, content_type, "POST", server.url + "/invocations", chosen, body)
        for variant in HEADER_VARIANTS:
            tally.send(session, content_type, "POST", server.url + "/invocations",
                       {"Content-Type": chosen["Content-Type"], **variant}, body)

    run_and_check(server, 2, "invocations", tally, one)


# --- the multi-model endpoint ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mme_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt-ml-models")
    train_model(root / "risk" / "model", "binary:logistic", metadata={"feature_names": FEATURES})
    train_model(root / "treatment" / "model", "multi:softprob", seed=1)
    (root / "broken" / "model").mkdir(parents=True)
    (root / "broken" / "model" / "xgboost-model").write_bytes(b"\x00broken")
    (root / "empty" / "model").mkdir(parents=True)
    train_model(root.parent / "outside" / "model", "binary:logistic")
    (root / "link").symlink_to(root.parent / "outside" / "model")
    return root


@pytest.fixture(scope="module")
def multi_server(mme_root, tmp_path_factory):
    env = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MULTI_MODEL_DIR": str(mme_root),
           "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    process = ServeProcess(env, tmp_path_factory.mktemp("fuzz-mme") / "serve.log")
    yield process.wait_ready()
    process.stop()


names = st.one_of(st.sampled_from(["a", "b", "risk", "m.1", "x y", "ü", "-", "A" * 1024, "A" * 1025, "", "a/b",
                                   "..", "%2e%2e", "\x7f"]),
                  st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="/"), max_size=12))


@st.composite
def model_url(draw, root: Path):
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return str(root / draw(st.sampled_from(["risk", "risk", "treatment", "broken", "empty", "none"])) / "model")
    if kind < 9:
        return draw(st.sampled_from([str(root), str(root / ".."), "/etc", "relative/model", "", "/",
                                     str(root / "risk" / "model" / ".."), str(root / ("n" * 300) / "model"),
                                     str(root / "/".join(["d" * 200] * 30)), "/" + "x" * 5000, str(root / "link")]))
    return draw(json_scalar)


@st.composite
def management(draw, root: Path):
    name = draw(st.sampled_from(["a", "b", "risk", "m.1", "x y", "ü"]) if draw(st.integers(0, 9)) < 7 else names)
    op = draw(st.sampled_from(["load", "load", "load", "list", "describe", "delete", "invoke", "target", "raw"]))
    if op == "load":
        body = {"model_name": name, "url": draw(model_url(root))}
        if draw(st.integers(0, 9)) == 0:
            body = draw(json_value)
        return "POST", "/models", {"Content-Type": "application/json"}, _json_bytes(body)
    if op == "list":
        query = draw(st.sampled_from(["", "?max_results=1", "?max_results=0", "?max_results=abc", "?limit=1001",
                                      "?next_page_token=%%%", "?next_page_token=YQ", "?next_page_token=_-_-",
                                      "?max_results=2&next_page_token=bQ"]))
        return "GET", "/models" + query, {}, b""
    if op == "describe":
        return "GET", f"/models/{quote(name, safe='')}", {}, b""
    if op == "delete":
        return "DELETE", f"/models/{quote(name, safe='')}", {}, b""
    content_type, chosen, body = draw(invocation())
    if draw(st.integers(0, 4)) == 0:  # an invocation's errors never echo the model it named
        name = draw(st.sampled_from([MARK_TEXT, f"risk-{MARK_TEXT}", MARK_TEXT.upper()]))
    if op == "invoke":
        return "POST", f"/models/{quote(name, safe='')}/invoke", chosen, body
    if op == "target":
        chosen["X-Amzn-SageMaker-Target-Model"] = name.encode("utf-8").decode("latin1")
        return "POST", "/invocations", chosen, body
    return draw(st.sampled_from(["GET", "PUT", "PATCH", "POST"])), draw(st.sampled_from(
        ["/models/", "/models//invoke", "/models/a/b", "/ping", "/execution-parameters", "/nope"])), chosen, body


def test_generated_multi_model_api(multi_server, mme_root):
    tally, session = Tally(), requests.Session()

    @seed(SEED)
    @fuzz_settings("multi_model")
    @given(management(mme_root))
    def one(case):
        method, path, chosen, body = case
        tally.send(session, f"{method} /{path.split('?')[0].split('/')[1]}", method, multi_server.url + path, chosen,
                   body)

    run_and_check(multi_server, 1, "multi_model", tally, one)
