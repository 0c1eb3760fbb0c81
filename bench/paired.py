"""Single-row latency of ours against each baseline, paired: every server is up at once and each round times a short
burst on each, in turn (the order alternating), so that each round's ratio compares bursts seconds apart.

The interleaved repeats (bench.suite) time one system for most of a minute before the next starts; on a shared VM
whose speed drifts by a factor of two within minutes, a ratio of two such figures measures the drift as much as the
servers. Here a round's bursts are seconds apart (a few for the slowest baseline), and the ratio is the median over
rounds.

Each burst is timed twice: by the bench's Python client (bench.client, the figure the goals use, as before: a real
client's view, including the reconnection a server that closes each connection costs), and by wrk with one
connection (a C client; wrk starts its clock after connecting, so it leaves out that reconnection), for information.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import load
from bench.client import Client
from bench.report import spread

METRIC = "single-row p50, paired"  # the summary's entries (bench.report), by client
WRK_METRIC = "single-row p50, paired, wrk -c1"


def _python_p50_ms(server, protocol, bodies: list[bytes], count: int) -> float:
    client = Client(server.port, protocol.content_type, protocol.accept, protocol.path)
    try:
        return statistics.median(client.timed(bodies, count, warmup=20)) * 1e3
    finally:
        client.close()


def _wrk_p50_ms(server, protocol, bodies: list[bytes], count: int) -> float:
    return load.run(server.url, bodies[0], 1, requests=count, path=protocol.path,
                    content_type=protocol.content_type, accept=protocol.accept)["p50_ms"]


def measure(model, payloads, kinds: list, log_dir: Path, rounds: int, burst: int) -> dict:
    """{metric: {system: [p50 ms per round]}} for ours (in CSV) and each other kind in its own protocol; `burst`
    requests per burst and client. The servers' logs go to log_dir/<model>/."""
    (log_dir / model.name).mkdir(parents=True, exist_ok=True)
    servers = []
    try:
        for kind in kinds:
            servers.append(kind(model.model_dir, log_dir / model.name))
        figures = {METRIC: {s.name: [] for s in servers}, WRK_METRIC: {s.name: [] for s in servers}}
        for index in range(rounds):
            print(f"bench: paired single-row round {index + 1}/{rounds}, {model.name} model", flush=True)
            for server in servers if index % 2 == 0 else servers[::-1]:
                protocol = server.protocols[0]
                bodies = payloads.for_protocol(protocol)[0]
                figures[METRIC][server.name].append(_python_p50_ms(server, protocol, bodies, burst))
                figures[WRK_METRIC][server.name].append(_wrk_p50_ms(server, protocol, bodies, burst))
        return figures
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as error:  # stop the others all the same
                print(f"bench: stopping {server.name} failed: {error}", flush=True)


def summarize(figures: dict) -> dict:
    """Summary entries (bench.report.summarize's form): each system's p50 and ours/other as the median, min and max
    of the per-round values."""
    out = {}
    for metric, systems in figures.items():
        entry = {"unit": "ms", **{name: spread(values) for name, values in systems.items()}}
        ours = systems.get("ours", [])
        for name, values in systems.items():
            if name != "ours":
                entry[f"ours/{name}"] = spread([a / b for a, b in zip(ours, values) if a is not None and b])
        out[metric] = entry
    return out
