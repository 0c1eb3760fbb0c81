"""Summaries, ratios from interleaved repeats, targets, the printed table, report.json and the PNG plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.first_request import describe_controls

METRICS = {  # name -> (path in one server's result, unit, higher is better)
    "single-row p50": (("single_row", "p50_ms"), "ms", False),
    "single-row p99": (("single_row", "p99_ms"), "ms", False),
    "c8 throughput": (("load_c8", "requests_per_s"), "req/s", True),
    "c8 p99": (("load_c8", "p99_ms"), "ms", False),
    "c32 throughput": (("load_c32", "requests_per_s"), "req/s", True),
    "c32 p99": (("load_c32", "p99_ms"), "ms", False),
    "10k-row CSV": (("rows_10k", "min_ms"), "ms", False),
    "10k rows/s": (("rows_10k", "rows_per_s"), "rows/s", True),
    "10k / floor": (("rows_10k", "ratio_to_floor"), "x", False),
    "6 MiB CSV": (("body_6mib", "min_ms"), "ms", False),
    "6 MiB / floor": (("body_6mib", "ratio_to_floor"), "x", False),
    "start to /ping": (("start_s",), "s", False),
    "RSS per worker": (("memory", "worker_rss_mib"), "MiB", False),
    "PSS per worker": (("memory", "worker_pss_mib"), "MiB", False),
}


def _get(result: dict, path: tuple[str, ...]):
    value = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, list):
        return statistics.mean(value) if value else None
    return value


def spread(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def summarize(runs: dict) -> dict:
    """Per model and metric: min/median/max per system, and ratios taken within each repeat (interleaved)."""
    summary = {}
    for model, systems in runs.items():
        summary[model] = {}
        for metric, (path, unit, _) in METRICS.items():
            entry = {"unit": unit}
            for system, results in systems.items():
                entry[system] = spread([_get(r, path) for r in results])
            ours = [_get(r, path) for r in systems["ours"]]
            for other in (name for name in systems if name != "ours"):
                theirs = [_get(r, path) for r in systems[other]]
                ratios = [a / b for a, b in zip(ours, theirs) if a is not None and b]
                if ratios:
                    entry[f"ours/{other}"] = spread(ratios)
            summary[model][metric] = entry
    return summary


def _median(entry: dict | None, key: str = "median"):
    return entry[key] if entry else None


def targets(summary: dict, containers: dict) -> list[dict]:
    """The issue's targets, on the example model (200 trees depth 6, 40 features)."""
    example = summary.get("example", {})
    out = []

    def add(name, value, limit, met, note=""):
        out.append({"target": name, "value": value, "limit": limit,
                    "met": None if value is None else bool(met(value, limit)), "note": note})

    below, above = (lambda v, lim: v <= lim), (lambda v, lim: v >= lim)
    p50 = example.get("single-row p50", {})
    add("single-row p50 / naive p50 (median of per-repeat ratios)", _median(p50.get("ours/naive")), 0.3, below)
    add("single-row p50, ms (median of repeats)", _median(p50.get("ours")), 0.8, below,
        f"best repeat {_median(p50.get('ours'), 'min'):.3f} ms" if p50.get("ours") else "")
    add("c8 throughput / naive (median of per-repeat ratios)",
        _median(example.get("c8 throughput", {}).get("ours/naive")), 3.0, above)
    peer = "mlserver"
    skipped = "MLServer not measured" if not example.get("single-row p50", {}).get(peer) else ""
    add("single-row p50 / MLServer's (median of per-repeat ratios)", _median(p50.get(f"ours/{peer}")), 0.5, below,
        skipped)
    add("c8 throughput / MLServer's (median of per-repeat ratios)",
        _median(example.get("c8 throughput", {}).get(f"ours/{peer}")), 2.0, above, skipped)
    add("c8 p99 / MLServer's c8 p99 (median of per-repeat ratios)",
        _median(example.get("c8 p99", {}).get(f"ours/{peer}")), 1.0, below, skipped)
    add("10k-row CSV / in-process floor (paired with each request; median over repeats)",
        _median(example.get("10k / floor", {}).get("ours")), 1.25, below)
    starts = containers.get("xgboost_start_s")
    add("docker run -> /ping 200, xgboost image, s (median)", statistics.median(starts) if starts else None, 2.0,
        below)
    pat = containers.get("pat_start_s")
    add("docker run -> /ping 200, pat image (CPU), s (median)",
        statistics.median(pat) if isinstance(pat, list) and pat else None, 15.0, below,
        pat.get("skipped", "") if isinstance(pat, dict) else "")
    image = containers.get("images", {}).get("xgboost", {})
    add("xgboost image size, MB", image.get("size_mb"), 450.0, below, image.get("skipped", ""))
    heavy = containers.get("load_50k")
    add(f"load at concurrency 32 on the xgboost image: errors ({heavy['requests'] if heavy else 0} requests)",
        heavy["errors"] if heavy else None, 0, below, f"p99 {heavy['p99_ms']:.1f} ms" if heavy else "")
    return out


# Issue 20's ratio goals: (goal, metric, entry of the summary, limit, higher is better, models it is a goal on).
# Each is the median of ratios taken within each repeat (single-row: within each round of bench.paired, by the Python
# client); min and max show the spread. The issue sets them on the example model and MLServer's on the large model
# too; on other models they are shown for information.
RATIO_GOALS = (
    ("single-row p50 / lean naive's", "single-row p50, paired", "ours/lean", 0.3, False, ("example",)),
    ("8-connection throughput / lean naive's", "c8 throughput", "ours/lean", 3.0, True, ("example",)),
    ("10,000-row CSV / in-process floor", "10k / floor", "ours", 1.25, False, ("example",)),
    ("10,000-row JSON / in-process floor", "10k / floor", "ours-json", 1.25, False, ("example",)),
    ("single-row p50 / MLServer's", "single-row p50, paired", "ours/mlserver", 0.5, False, ("example", "large")),
    ("single-row p50 / lean naive's, by wrk -c1 (information)", "single-row p50, paired, wrk -c1", "ours/lean", 0.3,
     False, ()),
)


def _spread(entry: dict | None, absent: str) -> dict:
    return {k: entry[k] for k in ("median", "min", "max", "n")} if entry else {"note": absent}


def ratio_goals(summary: dict, first: dict | None = None) -> list[dict]:
    """The ratio goals per model, then the first request / steady p50 per family (bench.first_request), its
    warm-server controls in the note."""
    out = []
    for model, metrics in summary.items():
        for goal, metric, key, limit, higher, models in RATIO_GOALS:
            entry = metrics.get(metric, {}).get(key)
            met = None if entry is None or model not in models else (
                entry["median"] >= limit if higher else entry["median"] <= limit)
            figures = _spread(entry, f"{key.partition('/')[2] or key} not measured")
            if entry and model not in models:
                figures["note"] = (f"for information: a goal on the {' and '.join(models)} model only" if models
                                   else "for information")
            out.append({"goal": goal, "model": model, "limit": limit, "higher_is_better": higher, "met": met,
                        **figures})
    for family, entry in (first or {}).items():
        out.append({"goal": "first request after /ping 200 / steady p50", "model": f"{family} ({entry['model']})",
                    "limit": entry["goal"], "higher_is_better": False, "met": entry.get("met"),
                    **_spread(entry if "median" in entry else None, entry.get("skipped", "not measured"))})
        if entry.get("controls"):
            out[-1]["note"] = describe_controls(entry["controls"])
    return out


def print_goals(goals: list[dict], cpu: dict) -> None:
    print(f"\n== goals (issue 20): ratios taken within each repeat, median [min-max]; CPU {cpu['summary']}")
    for goal in goals:
        mark = {True: "MET", False: "NOT MET", None: "info" if "median" in goal else "n/a"}[goal["met"]]
        sign = ">=" if goal["higher_is_better"] else "<="
        value = (f"{goal['median']:.2f}x [{goal['min']:.2f}-{goal['max']:.2f}]" if "median" in goal
                 else goal.get("note", "-"))
        note = f"; {goal['note']}" if "median" in goal and "note" in goal else ""
        print(f"  [{mark:>7}] {goal['model']}: {goal['goal']}: {value} (goal {sign} {goal['limit']}{note})")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def print_report(report: dict) -> None:
    for model, metrics in report["summary"].items():
        systems = [k for k in next(iter(metrics.values())) if k != "unit" and "/" not in k]
        ratios = [k for k in next(iter(metrics.values())) if k.startswith("ours/")]
        print(f"\n== {model} model: {report['models'][model]}  (median [min-max] over {report['plan']['repeats']} "
              f"interleaved repeats; ratios taken within each repeat; the paired rows: over bench.paired's rounds)")
        print(f"{'metric':<16}{'unit':>7}" + "".join(f"{k:>20}" for k in systems) + "".join(f"{k:>15}" for k in ratios))
        for metric, entry in metrics.items():
            cells = []
            for system in systems:
                s = entry.get(system)
                cells.append(f"{_fmt(s['median'])} [{_fmt(s['min'])}-{_fmt(s['max'])}]" if s else "-")
            shown = [f"{entry[k]['median']:.2f}x" if entry.get(k) else "-" for k in ratios]
            print(f"{metric:<16}{entry['unit']:>7}" + "".join(f"{c:>20}" for c in cells)
                  + "".join(f"{r:>15}" for r in shown))
    containers = report["containers"]
    print("\n== containers")
    if "skipped" in containers:
        print(f"  skipped: {containers['skipped']}")
    for family, image in containers.get("images", {}).items():
        print(f"  {family} image {image['image']}: " + (f"{image['size_mb']:.0f} MB" if "size_mb" in image
                                                       else image["skipped"]))
    for key in ("xgboost_start_s", "pat_start_s"):
        if key in containers:
            value = containers[key]
            print(f"  {key}: " + (", ".join(f"{v:.2f}" for v in value) if isinstance(value, list) else str(value)))
    if containers.get("xgboost_memory"):
        memory = containers["xgboost_memory"]
        print(f"  xgboost container memory: workers RSS {memory['worker_rss_mib']} MiB, PSS "
              f"{[round(v, 1) for v in memory['worker_pss_mib']]} MiB, total PSS {memory['total_pss_mib']:.0f} MiB")
    if containers.get("load_50k"):
        heavy = containers["load_50k"]
        print(f"  load: {heavy['requests']} requests at c32: {heavy['requests_per_s']:.0f} req/s, p50 "
              f"{heavy['p50_ms']:.1f} ms, p99 {heavy['p99_ms']:.1f} ms, errors {heavy['errors']}")
    print("\n== targets (example model)")
    for target in report["targets"]:
        mark = {True: "MET", False: "NOT MET", None: "n/a"}[target["met"]]
        value = "-" if target["value"] is None else f"{target['value']:.3g}"
        print(f"  [{mark:>7}] {target['target']}: {value} (target {target['limit']}) {target['note']}")
    print_goals(report["goals"], report["machine"]["cpu_info"])
    print_keras(report.get("pat_vs_keras") or {"skipped": "not measured"})
    if report["other_benchmarks"]:
        print("\n== other benchmarks joined into this report: " + ", ".join(report["other_benchmarks"]))
    print(f"\nmachine: {report['machine']}")


def print_keras(keras: dict) -> None:
    print("\n== PAT vs the authors' Keras encoder (CPU, same weights and weeks)")
    if "skipped" in keras:
        print(f"  skipped: {keras['skipped']}")
        return
    print(f"  {keras['threads']} threads each, {keras['repeats']} interleaved repeats; {keras.get('versions', {})}")
    for variant, entry in keras["variants"].items():
        exact = entry.get("tokens_vs_float64", {})
        print(f"  {variant}: tokens differ by {entry['max_abs_diff_tokens']:.2e}, embeddings by "
              f"{entry['max_abs_diff_embedding']:.2e}; from float64 math: ours {exact.get('ours', float('nan')):.2e}, "
              f"Keras {exact.get('keras', float('nan')):.2e}")
        for batch, row in entry["batches"].items():
            roof = (f"; roof {_fmt(row['roof_ms'])} ms at the fp32 GEMM rate, at most {row['attainable_speedup']:.2f}x "
                    f"attainable" if "roof_ms" in row else "")
            print(f"    batch {batch}: ours {_fmt(row['ours_p50_ms'])} ms, Keras {_fmt(row['keras_p50_ms'])} ms per "
                  f"call: {row['speedup_median']:.2f}x [{row['speedup_min']:.2f}-{row['speedup_max']:.2f}]{roof}")
    for goal in keras["goals"]:
        attainable = f" (attainable {goal['attainable']:.2f}x)" if goal.get("attainable") else ""
        print(f"  [{'MET' if goal['met'] else 'NOT MET':>7}] {goal['goal']}: {goal['value']:.3g}{attainable}")


def other_benchmarks(directory: Path, own: set[str]) -> dict:
    """The JSON written by the other benchmarks (multi-model, PAT, actigraphy), included as they are."""
    found = {}
    for path in sorted(directory.glob("*.json")):
        if path.name in own:
            continue
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            found[path.stem] = {"unreadable": str(error)}
    return found


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("single-row p50", "single-row p50, ms (lower is better)"),
              ("c8 throughput", "throughput at 8 clients, req/s"),
              ("c32 p99", "p99 at 32 clients, ms"),
              ("10k-row CSV", "10,000-row CSV request, ms"),
              ("start to /ping", "process start to /ping 200, s"),
              ("PSS per worker", "PSS per worker, MiB")]
    systems = [("ours", "ours (CSV)", "#1f77b4"), ("ours-json", "ours (JSON)", "#aec7e8"),
               ("mlserver", "MLServer (V2 JSON)", "#ff7f0e"), ("naive", "naive BYO", "#d62728"),
               ("lean", "lean naive BYO", "#e377c2"),
               ("floor", "in-process floor", "#7f7f7f")]
    models = list(report["summary"])
    figure, axes = plt.subplots(2, 4, figsize=(18, 8))
    for axis, (metric, title) in zip(axes.flat, panels):
        width = 0.8 / len(systems)
        for i, (system, label, color) in enumerate(systems):
            entries = [report["summary"][m][metric].get(system) for m in models]
            heights = [e["median"] if e else 0 for e in entries]
            errors = [[e["median"] - e["min"] if e else 0 for e in entries],
                      [e["max"] - e["median"] if e else 0 for e in entries]]
            positions = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(models))]
            axis.bar(positions, heights, width, yerr=errors, capsize=3, label=label, color=color)
        axis.set_xticks(range(len(models)), models)
        axis.set_title(title, fontsize=10)
    axes.flat[0].legend(fontsize=8)
    containers = report["containers"]
    axis = axes.flat[6]
    names, values = [], []
    for family in ("xgboost", "pat"):
        starts = containers.get(f"{family}_start_s")
        if isinstance(starts, list) and starts:
            names.append(family)
            values.append(statistics.median(starts))
    axis.bar(names, values, color="#2ca02c")
    for x, limit in enumerate([2.0, 15.0][:len(names)]):
        axis.hlines(limit, x - 0.4, x + 0.4, colors="black", linestyles="dashed")
    axis.set_title("docker run -> /ping 200, s (dashed: target)", fontsize=10)
    axis = axes.flat[7]
    images = {k: v["size_mb"] for k, v in containers.get("images", {}).items() if "size_mb" in v}
    axis.bar(list(images), list(images.values()), color="#9467bd")
    if "xgboost" in images:
        axis.hlines(450, -0.4, 0.4, colors="black", linestyles="dashed")
    axis.set_title("image size, MB (dashed: xgboost target)", fontsize=10)
    figure.suptitle(f"XGBoost serving: ours, MLServer, naive and lean naive BYO, in-process floor; "
                    f"{report['machine']['summary']}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
