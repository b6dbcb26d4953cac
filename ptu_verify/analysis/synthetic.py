"""Synthetic run directories with known truth, for tests, benchmarks and report previews.

The deployment is modelled at the record level, not simulated over the network: arrivals are
evenly spaced at each stage's offered rate, and the share of requests above the delivered
capacity is rejected with 429 in a fixed, evenly spread pattern. The achieved TPM of every
stage is therefore min(offered, delivered) up to the token-count jitter.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import load_catalog
from ..records import HEALTH_SCHEMA, PLAN_SCHEMA, RECORD_SCHEMA, RUN_SCHEMA, PlanStage

try:
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - orjson is a declared dependency

    def _dumps(value: Any) -> bytes:
        return json.dumps(value).encode()


__all__ = ["SyntheticDeployment", "SyntheticLoad", "effective_capacity_tpm", "write_synthetic_run"]


@dataclass(frozen=True)
class SyntheticDeployment:
    """The truth to reproduce: capacity delivered, latency and token sizes."""

    model: str = "qwen-plus-2025-04-28"
    ptu: int = 8
    capacity_factor: float = 1.0  # share of the purchased capacity the deployment delivers
    ttft_median_s: float = 0.4
    ttft_factor: float = 1.0
    speed_tps: float = 60.0
    input_tokens: int = 1000
    output_tokens: int = 200
    max_tokens: int = 512
    deployment_code: str = "qwen-plus-d824b8ad"


@dataclass(frozen=True)
class SyntheticLoad:
    """The plan and the load generator's behaviour."""

    fractions: tuple[float, ...] = (0.5, 0.8, 1.0, 1.2)
    stage_s: float = 120.0
    warmup_s: float = 30.0
    start_at: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    workers: int = 2
    cpu_percent: float = 35.0
    late_share: float = 0.0
    failure_share: float = 0.0  # share of requests that end as http_error 500
    failure_message: str = "Internal server error"
    workload: str = "chat"
    variants: tuple[str, ...] = ("short", "long")
    tokens_estimated_share: float = 0.0
    plan_kind: str = "step"
    seed: int = 0


def effective_capacity_tpm(deployment: SyntheticDeployment) -> float:
    """Purchased TPM capacity, or QPM capacity × tokens per request when that is lower."""
    capacity = load_catalog().resolve(deployment.model).spec.capacity(deployment.ptu)
    return float(min(capacity.total_tpm, capacity.qpm * (deployment.input_tokens + deployment.output_tokens)))


def _ending(success: bool, throttled: bool, failure_message: str) -> dict[str, Any]:
    """Status, outcome and error fields of a successful, throttled or failed request."""
    if success:
        return {"status_code": 200, "outcome": "ok", "error_code": None, "error_message": None}
    if throttled:
        return {"status_code": 429, "outcome": "throttled", "error_code": "Throttling.AllocationQuota", "error_message": "Allocated quota exceeded"}
    return {"status_code": 500, "outcome": "http_error", "error_code": "InternalError", "error_message": failure_message}


def _stage_records(
    rng: np.random.Generator, deployment: SyntheticDeployment, load: SyntheticLoad, stage: PlanStage, run_id: str, offset: int
) -> list[dict[str, Any]]:
    tokens_per_request = deployment.input_tokens + deployment.output_tokens
    duration_s = stage["end_at"] - stage["start_at"]
    offered_qpm = float(stage["offered_tpm"] or 0.0) / tokens_per_request
    count = round(offered_qpm * duration_s / 60.0)
    if count == 0:
        return []
    started = stage["start_at"] + (np.arange(count) + 0.5) * (duration_s / count)

    # Admit an evenly spread share of requests equal to delivered / offered.
    delivered_share = min(1.0, deployment.capacity_factor * effective_capacity_tpm(deployment) / float(stage["offered_tpm"] or 1.0))
    admitted = np.floor((np.arange(count) + 1) * delivered_share) - np.floor(np.arange(count) * delivered_share) >= 1
    failed = admitted & (rng.random(count) < load.failure_share)
    ok = admitted & ~failed

    input_tokens = rng.integers(deployment.input_tokens - 50, deployment.input_tokens + 51, count)
    output_tokens = rng.integers(deployment.output_tokens - 20, deployment.output_tokens + 21, count)
    ttft = deployment.ttft_median_s * deployment.ttft_factor * np.exp(rng.normal(0.0, 0.2, count))
    speed = np.clip(rng.normal(deployment.speed_tps, deployment.speed_tps * 0.1, count), 1.0, None)
    e2e = np.where(ok, ttft + output_tokens / speed, np.where(failed, 0.3, 0.05))
    estimated = rng.random(count) < load.tokens_estimated_share
    variants = np.array(load.variants)[np.arange(count) % len(load.variants)]

    records = []
    for i in range(count):
        success = bool(ok[i])
        throttled = not admitted[i]
        records.append(
            {
                "schema": RECORD_SCHEMA,
                "run_id": run_id,
                "worker_id": f"w{i % load.workers}",
                "request_id": f"req-{offset + i}" if not throttled else None,
                "client_request_id": f"c-{offset + i}",
                "api": "openai",
                "transport": "fast",
                "deployment_code": deployment.deployment_code,
                "workload": load.workload,
                "variant": str(variants[i]),
                "stage": stage["label"],
                "started_at": float(started[i]),
                "scheduled_at": float(started[i]),
                "ttft_s": float(ttft[i]) if success else None,
                "ttfa_s": float(ttft[i]) if success else None,
                "e2e_s": float(e2e[i]),
                "input_tokens": int(input_tokens[i]) if success else None,
                "output_tokens": int(output_tokens[i]) if success else None,
                "reasoning_tokens": 0 if success else None,
                "cached_tokens": 0 if success else None,
                "image_tokens": None,
                "tokens_estimated": bool(estimated[i]) and success,
                "max_tokens": deployment.max_tokens,
                "chunks": int(output_tokens[i]) if success else 0,
                "gen_speed_tps": float(speed[i]) if success else None,
                "finish_reason": "stop" if success else None,
                **_ending(success, throttled, load.failure_message),
                "retry_after_s": None,
                "attempt": 1,
                "user_latency_s": float(e2e[i]),
            }
        )
    return records


def _plan_stages(deployment: SyntheticDeployment, load: SyntheticLoad) -> list[PlanStage]:
    capacity = effective_capacity_tpm(deployment)
    stages: list[PlanStage] = []
    for index, fraction in enumerate(load.fractions):
        start = load.start_at + index * load.stage_s
        stages.append(
            {
                "label": f"{fraction * 100:.0f}%",
                "start_at": start,
                "measure_start_at": start + load.warmup_s,
                "end_at": start + load.stage_s,
                "offered_tpm": fraction * capacity,
                "offered_qpm": fraction * capacity / (deployment.input_tokens + deployment.output_tokens),
                "fraction_of_capacity": fraction,
                "users": None,
            }
        )
    return stages


def _health_lines(load: SyntheticLoad, stages: list[PlanStage], deployment: SyntheticDeployment, rng: np.random.Generator) -> list[bytes]:
    lines = []
    tokens_per_request = deployment.input_tokens + deployment.output_tokens
    for stage in stages:
        per_worker = float(stage["offered_tpm"] or 0.0) / tokens_per_request / 60.0 / load.workers
        for second in range(int(stage["end_at"] - stage["start_at"])):
            for worker in range(load.workers):
                dispatched = int(math.floor(per_worker * (second + 1)) - math.floor(per_worker * second))
                late = int(rng.binomial(dispatched, load.late_share)) if load.late_share else 0
                lines.append(
                    _dumps(
                        {
                            "schema": HEALTH_SCHEMA,
                            "worker_id": f"w{worker}",
                            "at": stage["start_at"] + second,
                            "cpu_percent": float(np.clip(load.cpu_percent + rng.normal(0.0, 2.0), 0.0, 100.0)),
                            "loop_lag_s": 0.002,
                            "in_flight": 4,
                            "dispatched": max(dispatched, late),
                            "late_dispatches": late,
                            "dropped_dispatches": 0,
                            "stage": stage["label"],
                        }
                    )
                )
    return lines


def write_synthetic_run(
    run_dir: Path, deployment: SyntheticDeployment | None = None, load: SyntheticLoad | None = None, *, write_plan: bool = True
) -> Path:
    """Write records.jsonl, run.json, plan.json and health-*.jsonl for a synthetic run; return run_dir."""
    deployment = deployment or SyntheticDeployment()
    load = load or SyntheticLoad()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(load.seed)
    run_id = "synthetic"
    stages = _plan_stages(deployment, load)

    records: list[dict[str, Any]] = []
    for stage in stages:
        records.extend(_stage_records(rng, deployment, load, stage, run_id, len(records)))
    with (run_dir / "records.jsonl").open("wb") as handle:
        handle.writelines(_dumps(record) + b"\n" for record in records)

    health = _health_lines(load, stages, deployment, rng)
    for worker in range(load.workers):
        prefix = f'"worker_id":"w{worker}"'.encode()
        with (run_dir / f"health-w{worker}.jsonl").open("wb") as handle:
            handle.writelines(line + b"\n" for line in health if prefix in line)

    end_at = stages[-1]["end_at"]
    run_info = {
        "schema": RUN_SCHEMA,
        "run_id": run_id,
        "command": ["ptu-verify", "run", "--api-key", "sk-test-fake-0000"],
        "versions": {"ptu_verify": "synthetic"},
        "host": "http://127.0.0.1:0/compatible-mode/v1",
        "model": deployment.model,
        "ptu": deployment.ptu,
        "deployment_code": deployment.deployment_code,
        "api": "openai",
        "transport": "fast",
        "workload": load.workload,
        "plan": load.plan_kind,
        "simulated": True,
        "started_at": load.start_at,
        "ended_at": end_at,
        "partial": False,
        "workers": [f"w{worker}" for worker in range(load.workers)],
    }
    (run_dir / "run.json").write_text(json.dumps(run_info, indent=2), encoding="utf-8")
    if write_plan:
        capacity = effective_capacity_tpm(deployment)
        plan = {
            "schema": PLAN_SCHEMA,
            "plan": load.plan_kind,
            "arrival": "constant",
            "capacity_tpm": capacity,
            "capacity_qpm": capacity / (deployment.input_tokens + deployment.output_tokens),
            "tokens_per_request": deployment.input_tokens + deployment.output_tokens,
            "stages": stages,
        }
        (run_dir / "plan.json").write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return run_dir
