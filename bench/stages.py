"""Where a served request's time goes, from the runtime's own metric records (serve.metrics: one EMF line per
invocation). `python -m bench` reads the logs of our servers after its runs and writes the split per server log
as a picture, build/bench/report-stages.png; `python -m bench.stages LOG...` does the same for any serve logs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from serve.metrics import STAGES


def stage_times(log: Path) -> dict[str, float] | None:
    """Median milliseconds per stage over the 200 answers of one log whose lines carry metrics; None without any."""
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for text in log.read_text(errors="replace").splitlines():
        if '"_aws"' not in text:
            continue
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if line.get("status") == 200 and all(stage in line for stage in STAGES):
            for stage in STAGES:
                times[stage].append(line[stage])
    if not times[STAGES[0]]:
        return None
    return {stage: statistics.median(values) for stage, values in times.items()} | {"count": len(times[STAGES[0]])}


def split(logs: list[Path]) -> dict[str, dict[str, float]]:
    """Log name -> its median stage times, for the logs that hold metric records."""
    found = {log.stem: stage_times(log) for log in sorted(logs)}
    return {name: times for name, times in found.items() if times}


def plot(found: dict[str, dict[str, float]], path: Path) -> None:
    """One bar per log, each on its own scale (a PAT request takes many times an XGBoost one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(found)
    figure, axes = plt.subplots(len(names), 1, figsize=(9, 0.9 + 1.1 * len(names)), squeeze=False)
    for row, name in zip(axes[:, 0], names):
        left = 0.0
        for stage in STAGES:
            row.barh([name], [found[name][stage]], left=left, label=stage)
            left += found[name][stage]
        row.set_xlabel(f"median ms per 200 answer ({found[name]['count']} answers)", fontsize=8)
    axes[0, 0].set_title("Time per stage inside the app, from the servers' own metric records")
    figure.legend(*axes[0, 0].get_legend_handles_labels(), ncol=len(STAGES), loc="lower center", fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="per-stage time split of serve logs, as a PNG")
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build/bench/stages.png"))
    args = parser.parse_args(argv)
    found = split(args.logs)
    if not found:
        print("no metric records in those logs")
        return 1
    plot(found, args.out)
    for name, times in found.items():
        print(f"{name}: " + ", ".join(f"{stage} {times[stage]:.3f} ms" for stage in STAGES) +
              f" ({times['count']} answers)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
