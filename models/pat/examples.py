"""Build an example PAT artifact: a RANDOMLY INITIALIZED PAT-S encoder with task heads trained on
synthetic weeks. It exercises the whole serving path; its scores mean nothing clinically.

    python -m models.pat.examples --out build/models/pat     # also build/models/pat.tar.gz and pat.sample.json

`pat.sample.json` is a request to send: one synthetic week, asking for the embedding, the scores and the metrics.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.pat.artifact import ArtifactConfig, Standardization, save_artifact
from models.pat.network import PatEncoder, TaskHead, spec_for

MINUTES_PER_DAY = 1440
DAYS = 7
TASKS = {
    "depression": "synthetic stand-in for PHQ-9 >= 10: low, irregular activity",
    "sleep_disorder": "synthetic stand-in for a reported sleep disorder: fragmented, short or long nights",
    "benzodiazepine": "synthetic stand-in for benzodiazepine use: long, still nights, low day activity",
    "ssri": "synthetic stand-in for SSRI use: related to the depression signal and irregular timing",
}
DESCRIPTION = ("EXAMPLE ONLY. The PAT-S encoder is randomly initialized (seed {seed}), not the authors' "
               "pretrained weights; the task heads were trained for {steps} steps on {subjects} synthetic "
               "weeks. Scores carry no clinical meaning.")


def synthetic_weeks(subjects: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(subjects, 10080) activity counts per minute from midnight, and each subject's traits.

    Awake minutes follow a daily rhythm peaking mid-afternoon with gamma-distributed counts and
    sedentary zeros; nights are mostly still, broken by movements and awakenings at a per-subject
    fragmentation rate; bedtimes jitter from day to day by a per-subject amount.
    """
    traits = {
        "level": rng.lognormal(np.log(250.0), 0.4, subjects),
        "sleep_hours": np.clip(rng.normal(7.5, 1.1, subjects), 4.0, 11.0),
        "wake_hour": rng.normal(7.0, 0.8, subjects),
        "jitter_hours": rng.uniform(0.1, 1.5, subjects),
        "fragmentation": rng.beta(1.5, 12.0, subjects),
    }
    minute = np.arange(DAYS * MINUTES_PER_DAY)
    clock = (minute % MINUTES_PER_DAY) / 60.0
    day = minute // MINUTES_PER_DAY
    rhythm = 0.6 + 0.4 * np.sin(2 * np.pi * (clock - 9.0) / 24.0)  # peaks at 15:00
    weeks = np.empty((subjects, minute.size), dtype=np.float32)
    for s in range(subjects):
        wake = traits["wake_hour"][s] + rng.normal(0.0, traits["jitter_hours"][s], DAYS)
        asleep = _asleep(clock, day, wake, traits["sleep_hours"][s])
        mean = traits["level"][s] * rhythm
        counts = rng.gamma(1.2, mean / 1.2) * (rng.random(minute.size) > 0.15)
        frag = traits["fragmentation"][s]
        night = rng.gamma(0.8, 40.0, minute.size) * (rng.random(minute.size) < frag)
        awakening = np.convolve(rng.random(minute.size) < frag / 20, np.ones(10), "same") > 0
        weeks[s] = np.where(asleep & ~awakening, night, counts)
    return np.round(weeks), traits


def _asleep(clock: np.ndarray, day: np.ndarray, wake: np.ndarray, hours: float) -> np.ndarray:
    """Minutes inside each night's sleep window, which ends at that day's wake time."""
    time_of_week = day * 24.0 + clock
    asleep = np.zeros(clock.size, dtype=bool)
    for d, wake_hour in enumerate(wake):
        end = d * 24.0 + wake_hour
        asleep |= (time_of_week >= end - hours) & (time_of_week < end)
    return asleep


def synthetic_labels(traits: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Binary labels drawn from logistic functions of the traits (about a quarter positive)."""
    def z(values):
        return (values - values.mean()) / values.std()

    level, jitter, frag = z(np.log(traits["level"])), z(traits["jitter_hours"]), z(traits["fragmentation"])
    sleep = z(traits["sleep_hours"])
    mood = -level + 0.8 * jitter + 0.4 * np.abs(sleep)
    logits = {
        "depression": 1.2 * mood,
        "sleep_disorder": 1.5 * frag + 0.8 * np.abs(sleep),
        "benzodiazepine": 1.2 * sleep - 0.8 * frag - 0.6 * level,
        "ssri": 0.8 * mood + 0.6 * jitter,
    }
    return {task: (rng.random(v.size) < 1 / (1 + np.exp(-(v - 1.2)))).astype(np.float32)
            for task, v in logits.items()}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over positive/negative pairs."""
    from scipy.stats import mannwhitneyu

    positive, negative = scores[labels == 1], scores[labels == 0]
    if not positive.size or not negative.size:
        return float("nan")  # undefined with one class only (a tiny example)
    return float(mannwhitneyu(positive, negative).statistic / (positive.size * negative.size))


def train_head(train_x: torch.Tensor, train_y: torch.Tensor, steps: int, seed: int) -> TaskHead:
    """Full-batch Adam on BCE with classes balanced (as the paper's class weights do)."""
    torch.manual_seed(seed)
    head = TaskHead(embed_dim=train_x.shape[1])
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    positives = train_y.sum().clamp(min=1.0)
    pos_weight = (train_y.numel() - positives) / positives
    head.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(head.logit(train_x), train_y, pos_weight=pos_weight).backward()
        optimizer.step()
    return head.eval()


def build_example(out: Path, subjects: int = 1200, steps: int = 400, seed: int = 0) -> dict[str, float]:
    """Write the example artifact directory; returns each task's synthetic validation AUC."""
    rng = np.random.default_rng(seed)
    weeks, traits = synthetic_weeks(subjects, rng)
    labels = synthetic_labels(traits, rng)
    train = np.arange(subjects) < int(subjects * 0.8)

    mean, std = weeks[train].mean(axis=0), weeks[train].std(axis=0)
    standardization = Standardization.checked(mean, np.where(std > 0, std, 1.0))

    torch.manual_seed(seed)
    encoder = PatEncoder(spec_for("PAT-S")).eval()
    with torch.inference_mode():
        batches = np.array_split(standardization.apply(weeks), max(1, subjects // 64))
        embeddings = torch.cat([encoder.embed(torch.from_numpy(b)) for b in batches])

    heads, tasks, scores = {}, {}, {}
    for offset, (task, description) in enumerate(TASKS.items()):
        y = torch.from_numpy(labels[task])
        head = train_head(embeddings[train], y[train], steps, seed + offset)
        with torch.inference_mode():
            probability = head(embeddings[~train]).numpy()
        scores[task] = round(auc(probability, labels[task][~train]), 3)
        heads[task] = head
        tasks[task] = {"threshold": 0.5, "description": description, "synthetic_validation_auc": scores[task]}

    config = ArtifactConfig(
        variant="PAT-S", pretrained=False, tasks=tasks,
        description=DESCRIPTION.format(seed=seed, steps=steps, subjects=subjects),
        extra={"standardization": "per-minute mean/std of the synthetic training weeks, minute 0 = midnight"},
    )
    save_artifact(out, encoder, heads, config, standardization)
    return scores


def write_tarball(model_dir: Path, tarball: Path) -> Path:
    """model.tar.gz with the directory's files at the archive root, reproducible byte for byte."""
    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        info.mode = 0o644  # safetensors writes 0600; a non-root server must read the files
        return info

    with gzip.GzipFile(tarball, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), filter=normalize)
    return tarball


def write_sample(path: Path, seed: int) -> Path:
    """A request for one synthetic week starting on a Monday at midnight (no real patient is in it)."""
    weeks, _ = synthetic_weeks(1, np.random.default_rng(seed + 1))
    week = {"id": "example-1", "start": "2024-03-04T00:00", "activity": weeks[0].astype(int).tolist()}
    path.write_text(json.dumps({"instances": [week], "outputs": ["embedding", "scores", "metrics"]}) + "\n")
    return path


def clear_previous_example(out: Path) -> None:
    """Remove an earlier example build at `out`; refuse to touch any other non-empty directory."""
    if not out.exists() or not any(out.iterdir()):
        return
    try:
        previous = json.loads((out / "config.json").read_text(encoding="utf-8"))["description"]
    except (OSError, ValueError, KeyError, TypeError):
        previous = ""
    if not str(previous).startswith("EXAMPLE ONLY"):
        raise SystemExit(f"{out} exists and is not an earlier example build; remove it or pick another --out")
    shutil.rmtree(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/models/pat"), help="artifact directory")
    parser.add_argument("--tarball", type=Path, help="archive path (default: OUT.tar.gz beside OUT)")
    parser.add_argument("--subjects", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    clear_previous_example(args.out)
    scores = build_example(args.out, args.subjects, args.steps, args.seed)
    for path in args.out.rglob("*"):  # safetensors writes 0600; a server running as another user reads them
        path.chmod(0o755 if path.is_dir() else 0o644)
    tarball = write_tarball(args.out, args.tarball or args.out.with_name(args.out.name + ".tar.gz"))
    sample = write_sample(args.out.with_name(args.out.name + ".sample.json"), args.seed)
    print(f"wrote {args.out}/, {tarball} and {sample} in {time.perf_counter() - started:.1f} s "
          "(PAT-S randomly initialized; heads on synthetic data)")
    for task, value in scores.items():
        print(f"  {task}: synthetic validation AUC {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
