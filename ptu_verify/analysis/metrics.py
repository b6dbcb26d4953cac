"""Per-stage and overall metrics from the record frame, computed with vectorised numpy/pandas.

Conventions (docs/analysis.md has the full list):
- a request belongs to the stage in which it started, and is measured when it started in
  [measure_start_at, end_at) of that stage;
- achieved rates count tokens and requests of successful attempts only and divide by the
  measured span; shares (429, failures) divide by all attempts;
- latency and speed percentiles come from successful attempts, exact (numpy linear
  interpolation) over the raw samples of all workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..records import THROTTLE_CODES, PlanStage

__all__ = [
    "PERCENTILES",
    "Prepared",
    "StageWindow",
    "bootstrap_rate_ci",
    "failure_samples",
    "generator_health",
    "group_metrics",
    "minute_windows",
    "percentile_block",
    "prepare",
    "speed_histogram",
    "stage_windows",
    "steady_state_rate",
    "time_series",
    "variant_breakdown",
]

PERCENTILES = (50, 90, 95, 99)
SERIES_BIN_S = 10.0
# A run longer than this many default bins gets wider bins, so a stray timestamp cannot blow up memory.
_MAX_SERIES_BINS = 5000
_MIN_CI_WINDOWS = 5
_MAX_VARIANTS = 50
_MAX_SAMPLE_MESSAGES = 3
_MAX_FAILURE_GROUPS = 20
_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class StageWindow:
    """A stage's time window; requests started in [measure_start_at, end_at) are measured."""

    label: str
    start_at: float
    measure_start_at: float
    end_at: float
    offered_tpm: float | None
    offered_qpm: float | None
    fraction_of_capacity: float | None
    from_plan: bool

    @property
    def measured_s(self) -> float:
        """Length of the measured part of the stage, seconds."""
        return max(self.end_at - self.measure_start_at, 0.0)


@dataclass
class Prepared:
    """The record frame with derived columns, and each record's stage."""

    frame: pd.DataFrame
    windows: list[StageWindow]
    stage_index: np.ndarray  # index into windows, -1 outside every stage
    measured: np.ndarray  # bool: started inside a measured window


def stage_windows(stages: list[PlanStage], started_at: np.ndarray) -> list[StageWindow]:
    """Windows from the plan; without a plan, one stage "all" from the first to the last start."""
    if stages:
        return [
            StageWindow(
                label=str(stage["label"]),
                start_at=float(stage["start_at"]),
                measure_start_at=float(stage["measure_start_at"]),
                end_at=float(stage["end_at"]),
                offered_tpm=stage.get("offered_tpm"),
                offered_qpm=stage.get("offered_qpm"),
                fraction_of_capacity=stage.get("fraction_of_capacity"),
                from_plan=True,
            )
            for stage in stages
        ]
    first, last = float(started_at.min()), float(started_at.max())
    # The end is exclusive, so it is moved just past the last start to keep that request.
    return [StageWindow("all", first, first, float(np.nextafter(last, math.inf)), None, None, None, from_plan=False)]


def prepare(frame: pd.DataFrame, stages: list[PlanStage]) -> Prepared:
    """Add the derived columns (ok, throttled, tokens, end time) and assign stages."""
    outcome = frame["outcome"].astype(str).to_numpy()
    error_code = frame["error_code"].astype(object)
    throttled = (outcome == "throttled") | (frame["status_code"].to_numpy() == 429) | error_code.isin(list(THROTTLE_CODES)).to_numpy()
    ok = (outcome == "ok") & ~throttled

    frame = frame.assign(
        ok=ok,
        throttled=throttled,
        throttle_kind=np.where(throttled, error_code.map(THROTTLE_CODES).fillna("unknown").astype(str).to_numpy(), ""),
        input_n=frame["input_tokens"].fillna(0.0),
        output_n=frame["output_tokens"].fillna(0.0),
        ended_at=frame["started_at"] + frame["e2e_s"],
    )
    frame["total_n"] = frame["input_n"] + frame["output_n"]

    started = frame["started_at"].to_numpy()
    windows = stage_windows(stages, started)
    starts = np.array([window.start_at for window in windows])
    ends = np.array([window.end_at for window in windows])
    measure_starts = np.array([window.measure_start_at for window in windows])
    index = np.searchsorted(starts, started, side="right") - 1
    inside = (index >= 0) & (started < ends[np.clip(index, 0, None)])
    index = np.where(inside, index, -1)
    measured = inside & (started >= measure_starts[np.clip(index, 0, None)])
    return Prepared(frame=frame, windows=windows, stage_index=index, measured=measured)


def percentile_block(values: np.ndarray | pd.Series) -> dict[str, float | int | None]:
    """Exact p50/p90/p95/p99, max, mean and count of the finite values."""
    array = np.asarray(values, dtype="float64")
    array = array[np.isfinite(array)]
    block: dict[str, float | int | None] = {"count": int(array.size)}
    if array.size == 0:
        block.update({f"p{p}": None for p in PERCENTILES})
        block.update({"max": None, "mean": None})
        return block
    for p, value in zip(PERCENTILES, np.percentile(array, PERCENTILES)):
        block[f"p{p}"] = float(value)
    block["max"] = float(array.max())
    block["mean"] = float(array.mean())
    return block


def steady_state_rate(ended_at: np.ndarray, amounts: np.ndarray) -> tuple[float | None, float | None]:
    """Completion rate per second between the first and the last completion.

    The first completion only starts the clock, so its amount is not counted: 40 requests sent at
    once and completed one per second from t=10 to t=49 give 39 / 39 s = 1.0 per second. Returns
    (events per second, amount per second), None when fewer than two completions are spread in time.
    """
    finite = np.isfinite(ended_at)
    ended_at, amounts = ended_at[finite], amounts[finite]
    order = np.argsort(ended_at, kind="stable")
    times = ended_at[order]
    if times.size < 2 or times[-1] <= times[0]:
        return None, None
    span_s = float(times[-1] - times[0])
    return (times.size - 1) / span_s, float(amounts[order][1:].sum()) / span_s


def _safe_share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def group_metrics(group: pd.DataFrame, span_s: float, *, from_plan: bool) -> dict[str, Any]:
    """Counts, shares, achieved rates and distributions of one set of measured attempts.

    With ``from_plan`` the rates divide by ``span_s``; without a plan the schedule is unknown and
    the rates are the steady-state completion rates (see steady_state_rate).
    """
    ok = group[group["ok"].to_numpy()]
    attempts = len(group)
    # Retries (attempt > 1) share the user request of their first attempt, which ends in at most one success.
    first = group["attempt"].to_numpy() <= 1
    first_attempts = int(first.sum())
    throttled = int(group["throttled"].sum())
    failed = group[~group["ok"].to_numpy() & ~group["throttled"].to_numpy()]
    by_kind = group.loc[group["throttled"].to_numpy(), "throttle_kind"].value_counts()
    by_outcome = failed["outcome"].astype(str).value_counts()

    sums = {
        "input": float(ok["input_n"].sum()),
        "output": float(ok["output_n"].sum()),
        "cached": float(ok["cached_tokens"].fillna(0.0).sum()),
        "reasoning": float(ok["reasoning_tokens"].fillna(0.0).sum()),
    }
    total_tokens = sums["input"] + sums["output"]
    reserved = (ok["max_tokens"] - ok["output_n"]).clip(lower=0.0)
    steady_qps, steady_tps = steady_state_rate(ok["ended_at"].to_numpy(), ok["total_n"].to_numpy())
    ends = ok["ended_at"].to_numpy()
    ends = ends[np.isfinite(ends)]
    elapsed_s = float(ends.max() - group["started_at"].min()) if ends.size else 0.0

    if from_plan and span_s > 0:
        minutes = span_s / 60.0
        rate_method = "measured_span"
        achieved_qpm: float | None = len(ok) / minutes
        token_rate_per_min: float | None = 1.0 / minutes
    else:
        rate_method = "steady_state"
        achieved_qpm = steady_qps * 60.0 if steady_qps is not None else None
        token_rate_per_min = steady_tps * 60.0 / total_tokens if steady_tps is not None and total_tokens > 0 else None

    def per_min(amount: float) -> float | None:
        return amount * token_rate_per_min if token_rate_per_min is not None else None

    return {
        "requests": attempts,
        "ok_requests": len(ok),
        "first_attempts": first_attempts,
        "retried_attempts": attempts - first_attempts,
        "first_attempt_throttled_share": _safe_share(int((group["throttled"].to_numpy() & first).sum()), first_attempts),
        "user_success_share": _safe_share(len(ok), first_attempts),
        "throttled": throttled,
        "throttled_share": _safe_share(throttled, attempts),
        "throttled_by_kind": {str(kind): int(count) for kind, count in by_kind.items() if count},
        "failed_by_outcome": {str(outcome): int(count) for outcome, count in by_outcome.items() if count},
        "failed_share": _safe_share(len(failed), attempts),
        "measured_s": span_s,
        "rate_method": rate_method,
        "achieved_tpm": per_min(total_tokens),
        "achieved_input_tpm": per_min(sums["input"]),
        "achieved_output_tpm": per_min(sums["output"]),
        "achieved_cached_tpm": per_min(sums["cached"]),
        "achieved_reasoning_tpm": per_min(sums["reasoning"]),
        "achieved_qpm": achieved_qpm,
        "attempted_qpm": attempts / (span_s / 60.0) if from_plan and span_s > 0 else None,
        "steady_state_qpm": steady_qps * 60.0 if steady_qps is not None else None,
        "steady_state_tpm": steady_tps * 60.0 if steady_tps is not None else None,
        "naive_qpm": len(ok) / elapsed_s * 60.0 if elapsed_s > 0 else None,
        "elapsed_s": elapsed_s,
        "tokens": {**sums, "total": total_tokens},
        "tokens_per_request": total_tokens / len(ok) if len(ok) else None,
        "input_share": sums["input"] / total_tokens if total_tokens > 0 else None,
        "reserved_unused_tpm": per_min(float(reserved.sum())),
        "tokens_estimated_share": _safe_share(int(ok["tokens_estimated"].sum()), len(ok)),
        "longest_request_s": float(ok["e2e_s"].max()) if len(ok) and ok["e2e_s"].notna().any() else None,
        "ttft_s": percentile_block(ok["ttft_s"]),
        "ttfa_s": percentile_block(ok["ttfa_s"]),
        "e2e_s": percentile_block(ok["e2e_s"]),
        "speed_tps": percentile_block(ok["gen_speed_tps"]),
    }


def bootstrap_rate_ci(
    times: np.ndarray, amounts: np.ndarray, start: float, end: float, *, window_s: float, resamples: int, level: float, seed: int
) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of a per-minute rate, resampling whole time windows.

    Windows keep the short-range correlation of arrivals that resampling single requests would
    break. Each resample's rate is the sum of its windows' amounts over the sum of their lengths.
    """
    # Fewer windows than this give an interval too unstable to report.
    if end - start < _MIN_CI_WINDOWS * window_s:
        return None, None
    # Windows are widened past 5,000 so the resample matrix stays within tens of megabytes.
    window_s = max(window_s, (end - start) / _MAX_SERIES_BINS)
    edges = np.arange(start, end, window_s)
    lengths = np.minimum(edges + window_s, end) - edges
    bins = np.clip(((times - start) // window_s).astype(np.int64), 0, edges.size - 1)
    inside = (times >= start) & (times < end)
    per_window = np.bincount(bins[inside], weights=amounts[inside], minlength=edges.size)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, edges.size, size=(resamples, edges.size))
    rates = per_window[picks].sum(axis=1) / lengths[picks].sum(axis=1) * 60.0
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(rates, [tail, 100.0 - tail])
    return float(low), float(high)


def time_series(frame: pd.DataFrame, bin_s: float = SERIES_BIN_S) -> dict[str, list[float | None]]:
    """TPM, QPM and 429 share per ``bin_s`` of start time, over the whole run (warm-up included).

    Runs longer than 5,000 bins use wider bins; ``bin_s`` in the result is the width used.
    """
    started = frame["started_at"].to_numpy()
    origin = float(started.min())
    span_s = float(started.max()) - origin
    if span_s / bin_s > _MAX_SERIES_BINS:
        bin_s = float(math.ceil(span_s / _MAX_SERIES_BINS))
    bins = ((started - origin) // bin_s).astype(np.int64)
    count = int(bins.max()) + 1
    attempts = np.bincount(bins, minlength=count)
    ok = np.bincount(bins, weights=frame["ok"].to_numpy(dtype=float), minlength=count)
    throttled = np.bincount(bins, weights=frame["throttled"].to_numpy(dtype=float), minlength=count)
    tokens = np.bincount(bins, weights=np.where(frame["ok"].to_numpy(), frame["total_n"].to_numpy(), 0.0), minlength=count)
    per_min = 60.0 / bin_s
    share = np.divide(throttled, attempts, out=np.full(count, np.nan), where=attempts > 0)
    return {
        "origin_at": [origin],
        "bin_s": [bin_s],
        "t_s": (np.arange(count) * bin_s).tolist(),
        "achieved_tpm": (tokens * per_min).tolist(),
        "achieved_qpm": (ok * per_min).tolist(),
        "attempted_qpm": (attempts * per_min).tolist(),
        "throttled_share": [None if math.isnan(value) else float(value) for value in share],
    }


def minute_windows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per wall-clock minute (UTC-aligned) totals, to set beside the Bailian console's minute figures."""
    # NOTE: requests are placed in the minute they started. Whether the console counts a request
    # at its start or its end is not documented, so minutes near a boundary may differ.
    minute = (frame["started_at"] // 60.0 * 60.0).astype("int64")
    grouped = frame.assign(
        minute_at=minute,
        ok_input=np.where(frame["ok"], frame["input_n"], 0.0),
        ok_output=np.where(frame["ok"], frame["output_n"], 0.0),
    ).groupby("minute_at", sort=True)
    table = grouped.agg(
        requests=("ok", "size"), ok_requests=("ok", "sum"), throttled=("throttled", "sum"), input_tokens=("ok_input", "sum"), output_tokens=("ok_output", "sum")
    )
    return [
        {
            "minute_at": int(minute_at),
            "requests": int(row.requests),
            "ok_requests": int(row.ok_requests),
            "throttled": int(row.throttled),
            "input_tokens": float(row.input_tokens),
            "output_tokens": float(row.output_tokens),
            "total_tokens": float(row.input_tokens + row.output_tokens),
        }
        for minute_at, row in table.iterrows()
    ]


def variant_breakdown(measured: pd.DataFrame, total_tokens: float) -> list[dict[str, Any]]:
    """Per workload variant: requests, 429 share, tokens per request, TTFT and speed."""
    rows = []
    groups = measured.groupby(["workload", "variant"], observed=True, sort=False)
    sizes = groups.size().sort_values(ascending=False).head(_MAX_VARIANTS)
    for key in sizes.index:
        group = groups.get_group(key)
        ok = group[group["ok"].to_numpy()]
        tokens = float(ok["total_n"].sum())
        ttft = percentile_block(ok["ttft_s"])
        speed = percentile_block(ok["gen_speed_tps"])
        rows.append(
            {
                "workload": str(key[0]),
                "variant": str(key[1]),
                "requests": len(group),
                "ok_requests": len(ok),
                "throttled_share": _safe_share(int(group["throttled"].sum()), len(group)),
                "input_tokens_mean": float(ok["input_n"].mean()) if len(ok) else None,
                "output_tokens_mean": float(ok["output_n"].mean()) if len(ok) else None,
                "token_share": tokens / total_tokens if total_tokens > 0 else None,
                "ttft_p50_s": ttft["p50"],
                "ttft_p95_s": ttft["p95"],
                "speed_p50_tps": speed["p50"],
                "e2e_p50_s": percentile_block(ok["e2e_s"])["p50"],
            }
        )
    return rows


def failure_samples(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Failed attempts of the whole run grouped by outcome and error code, with a few sample messages."""
    failed = frame[~frame["ok"].to_numpy()]
    if failed.empty:
        return []
    keys = failed[["outcome", "error_code", "status_code", "error_message"]].astype(object).fillna("")
    counts = keys.groupby(["outcome", "error_code"], sort=False).size().sort_values(ascending=False).head(_MAX_FAILURE_GROUPS)
    rows = []
    for (outcome, code), count in counts.items():
        subset = keys[(keys["outcome"] == outcome) & (keys["error_code"] == code)]
        messages = [str(message)[:_MESSAGE_CHARS] for message in subset["error_message"].unique()[:_MAX_SAMPLE_MESSAGES] if message]
        statuses = sorted({int(status) for status in subset["status_code"].unique() if status != ""})
        rows.append(
            {
                "outcome": str(outcome),
                "error_code": str(code) or None,
                "status_codes": statuses,
                "count": int(count),
                "share": int(count) / len(frame),
                "sample_messages": messages,
            }
        )
    return rows


def generator_health(health: pd.DataFrame, windows: list[StageWindow]) -> dict[str, Any]:
    """CPU, event-loop lag and late/dropped dispatch shares of the load generator, inside measured windows."""
    if health.empty:
        return {"samples": 0}
    at = health["at"].to_numpy()
    inside = np.zeros(at.size, dtype=bool)
    for window in windows:
        inside |= (at >= window.measure_start_at) & (at < window.end_at + 1.0)
    sample = health[inside] if inside.any() else health
    dispatched = float(sample["dispatched"].fillna(0).sum())
    late = float(sample["late_dispatches"].fillna(0).sum())
    dropped = float(sample["dropped_dispatches"].fillna(0).sum())
    cpu = sample["cpu_percent"].to_numpy(dtype=float)
    per_worker_cpu = sample.groupby(sample["worker_id"].astype(str))["cpu_percent"].quantile(0.95)
    return {
        "samples": len(sample),
        "workers": int(sample["worker_id"].nunique()),
        "cpu_p95_percent": percentile_block(cpu)["p95"],
        "cpu_max_percent": percentile_block(cpu)["max"],
        "cpu_p95_worst_worker_percent": float(per_worker_cpu.max()) if len(per_worker_cpu) else None,
        "loop_lag_s": percentile_block(sample["loop_lag_s"]),
        "dispatched": dispatched,
        "late_dispatches": late,
        "dropped_dispatches": dropped,
        "late_share": _safe_share(late, dispatched),
        "dropped_share": _safe_share(dropped, dispatched),
        "late_dropped_share": _safe_share(late + dropped, dispatched),
    }


def speed_histogram(speeds: pd.Series, bins: int = 30) -> dict[str, list[float]]:
    """Histogram of generation speeds, clipped at the 99.5th percentile so one outlier cannot flatten it."""
    values = speeds.to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"edges": [], "counts": []}
    top = float(np.percentile(values, 99.5))
    counts, edges = np.histogram(np.clip(values, None, top), bins=bins, range=(0.0, max(top, 1e-9)))
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
