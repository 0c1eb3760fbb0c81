"""PAT's cost per instance type, from weeks/s measured on this machine (`python -m bench.pat --only cpu`).

A CPU row scales the measured weeks/s by the instance's vCPUs over the vCPUs measured here (per-vCPU throughput at
the batch size the dynamic batcher reaches under load); its single-week p50 is the one measured here, at batch 1.
The GPU row is "unmeasured" until a CUDA run (`python -m bench.pat --device cuda --only precision`) gives a figure:
it is never estimated.

Prices: on-demand SageMaker real-time inference, US East (N. Virginia), USD per instance-hour. The pricing page
(https://aws.amazon.com/sagemaker/ai/pricing/, "Real-Time Inference") cannot be read from the build machine (no
internet; its tables load by script, and the one stored copy found lacks them). The figures below are the AWS Price
List API's (AmazonSageMaker offer, us-east-1), as quoted by public code that read it (PRICE_SOURCE), found on
2026-12-06: a second source agrees, to the cent, for m7i.large, c7i.large and c7i.xlarge, and several for
g4dn.xlarge. They are not checked against AWS's page: check them there (or in the offer file, component "Hosting")
before a budget rests on them.
"""

from __future__ import annotations

PRICE_REGION = "us-east-1"
PRICE_PAGE = "https://aws.amazon.com/sagemaker/ai/pricing/ (On-Demand Pricing, Real-Time Inference)"
PRICE_DATE: str | None = "2026-09-27"  # the day PRICE_SOURCE read the Price List API
PRICE_SOURCE = ("AWS Price List API (AmazonSageMaker, us-east-1) as quoted in a public sagemaker_env.py (code search "
                "index; repository not resolvable) and, rounded to the cent and labelled Hosting, in "
                "SuperCowPowers/workbench src/workbench/utils/model_utils.py; not checked against PRICE_PAGE")
PRICES: dict[str, float | None] = {  # USD per instance-hour
    "ml.m7i.large": 0.121,
    "ml.m7i.xlarge": 0.242,
    "ml.c7i.large": 0.107,
    "ml.c7i.xlarge": 0.214,
    "ml.g4dn.xlarge": 0.7364,
}
VCPUS = {"ml.m7i.large": 2, "ml.m7i.xlarge": 4, "ml.c7i.large": 2, "ml.c7i.xlarge": 4, "ml.g4dn.xlarge": 4}
CPU_INSTANCES = ("ml.m7i.large", "ml.m7i.xlarge", "ml.c7i.large", "ml.c7i.xlarge")
GPU_INSTANCE = "ml.g4dn.xlarge"


def endpoint_instance_types() -> tuple[str, ...]:
    """botocore's ProductionVariantInstanceType enum: the instance types a SageMaker endpoint accepts."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return tuple(model.shape_for("ProductionVariantInstanceType").enum)


def check_instance_types(types=tuple(VCPUS)) -> None:
    unknown = sorted(set(types) - set(endpoint_instance_types()))
    if unknown:
        raise ValueError(f"not SageMaker endpoint instance types (botocore's ProductionVariantInstanceType): "
                         f"{', '.join(unknown)}")


def cost_per_1000_weeks(price_per_hour: float | None, weeks_per_s: float | None) -> float | None:
    if price_per_hour is None or not weeks_per_s:
        return None
    return round(price_per_hour / (weeks_per_s * 3600.0) * 1000.0, 5)


def cost_rows(measured: dict[str, dict], vcpus_here: int, gpu: dict | None = None, prices=None) -> list[dict]:
    """One row per CPU instance type and precision in `measured` ({"bf16": {"weeks_per_s", "batch",
    "single_week_p50_ms"}, "fp32": {...}}: this machine's figures), and the GPU row (fp16) from `gpu` when a CUDA
    run gave one, else unmeasured."""
    prices = PRICES if prices is None else prices
    check_instance_types([*CPU_INSTANCES, GPU_INSTANCE])
    rows = []
    for instance in CPU_INSTANCES:
        for precision in ("bf16", "fp32"):
            if precision not in measured:
                continue
            figure = measured[precision]
            weeks_per_s = round(figure["weeks_per_s"] / vcpus_here * VCPUS[instance], 2)
            rows.append({"instance_type": instance, "precision": precision, "batch": figure["batch"],
                         "weeks_per_s": weeks_per_s, "price_per_hour": prices.get(instance),
                         "cost_per_1000_weeks": cost_per_1000_weeks(prices.get(instance), weeks_per_s),
                         "single_week_p50_ms": figure["single_week_p50_ms"],
                         "basis": f"measured on {vcpus_here} vCPUs here, scaled to {VCPUS[instance]}"})
    row = {"instance_type": GPU_INSTANCE, "precision": "fp16", "price_per_hour": prices.get(GPU_INSTANCE)}
    if gpu is None:
        rows.append({**row, "batch": None, "weeks_per_s": None, "cost_per_1000_weeks": None,
                     "single_week_p50_ms": None, "basis": "unmeasured: no CUDA run"})
    else:
        rows.append({**row, "batch": gpu["batch"], "weeks_per_s": gpu["weeks_per_s"],
                     "cost_per_1000_weeks": cost_per_1000_weeks(prices.get(GPU_INSTANCE), gpu["weeks_per_s"]),
                     "single_week_p50_ms": gpu["single_week_p50_ms"], "basis": f"measured on {gpu['device']}"})
    return rows


def markdown(rows: list[dict], variant: str) -> str:
    def cell(value, unit=""):
        return "" if value is None else f"{value}{unit}"

    lines = [f"{variant}: on-demand prices, {PRICE_REGION}, read {PRICE_DATE or 'never'}: {PRICE_SOURCE}",
             "| instance | precision | weeks/s per instance (batch) | $ per hour | $ per 1,000 weeks "
             "| single-week p50 | basis |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = "unmeasured" if r["weeks_per_s"] is None else f"{r['weeks_per_s']} ({r['batch']})"
        lines.append(f"| {r['instance_type']} | {r['precision']} | {speed} | {cell(r['price_per_hour'])} | "
                     f"{cell(r['cost_per_1000_weeks'])} | {cell(r['single_week_p50_ms'], ' ms')} | {r['basis']} |")
    if all(r["price_per_hour"] is None for r in rows):
        lines.append("Prices blank: not found in any source readable here; copy them from the page into "
                     "bench/cost.py PRICES with the date.")
    return "\n".join(lines)
