"""Regression check between two runs of the same workload and plan, with bootstrap noise bounds.

Each stage (matched by label) is measured from the raw records of both runs: requests started in the
stage's measured span ``[measure_start_at, end_at)``. The noise of a difference comes from a block
bootstrap: the span is cut into time blocks and blocks are resampled with replacement, in each run
independently. The interval of ``current - baseline`` is the difference ± t × its bootstrap standard
error, with Student's t at the Welch degrees of freedom of the block counts, because a standard error
from a dozen blocks is itself uncertain. A t interval needs far fewer resamples than percentile tails
at the small per-test error rates of a Bonferroni correction. Blocks instead of single requests keep the correlation between
requests that queued together. A difference is a regression only when the whole interval lies on the
worse side and the change is at least the metric's minimum change, so two runs of one configuration pass.

A metric is "insufficient data" instead of "unchanged" when its interval cannot tell: fewer than
``min_samples`` values on either side, a measured span shorter than ``min_windows`` blocks (off by
default), or an interval half-width above ``max_width_factor`` × the metric's minimum change (a ±96 %
interval would call a 30 % capacity cut "unchanged"). Nothing judged and no regression is exit 3.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import yaml

from ..errors import InputError
from ..i18n import _
from ..records import read_jsonl, record_files

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "COMPARE_SCHEMA",
    "METRICS",
    "CompareSettings",
    "MetricComparison",
    "StageComparison",
    "RunSide",
    "CompareResult",
    "StageSample",
    "load_compare_settings",
    "load_run",
    "stage_samples",
    "compare_runs",
    "compare_samples",
    "write_compare_json",
]

logger = logging.getLogger(__name__)

COMPARE_SCHEMA = "ptu-verify/compare-v1"

Direction = Literal["higher_is_better", "lower_is_better"]
Status = Literal["regression", "improvement", "unchanged", "insufficient_data"]


@dataclass(frozen=True)
class MetricInfo:
    """A compared metric: its better direction and whether its minimum change is relative or absolute."""

    name: str
    direction: Direction
    change: Literal["relative", "absolute"]  # relative: fraction of the baseline; absolute: in the metric's unit


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("achieved_tpm", "higher_is_better", "relative"),
    MetricInfo("ttft_p50_s", "lower_is_better", "relative"),
    MetricInfo("ttft_p95_s", "lower_is_better", "relative"),
    MetricInfo("speed_p50_tps", "higher_is_better", "relative"),
    MetricInfo("throttled_share", "lower_is_better", "absolute"),
)

_DEFAULT_MIN_CHANGE = {
    "achieved_tpm": 0.05,
    "ttft_p50_s": 0.10,
    "ttft_p95_s": 0.15,
    "speed_p50_tps": 0.10,
    "throttled_share": 0.03,
}


@dataclass(frozen=True)
class CompareSettings:
    """Noise and tolerance settings; the ``[compare]`` table of a policy file overrides them."""

    # Family-wise: the interval of each of the m (stage, metric) tests is taken at 1 - (1 - confidence) / m
    # (Bonferroni), so the chance that any test of two equal runs flags a change stays near 1 - confidence.
    confidence: float = 0.95
    resamples: int = 400
    seed: int = 20240601
    block_s: float = 5.0  # length of one bootstrap time block
    min_blocks: int = 10  # a shorter stage is cut into this many shorter blocks
    min_samples: int = 30  # fewer values than this on either side: insufficient data, never a regression
    # A measured span shorter than this many block_s: insufficient data. Off (0) by default, because a
    # steady short stage can still give a narrow interval, and the width rule catches the noisy ones.
    min_windows: int = 0
    max_width_factor: float = 4.0  # an "unchanged" interval wider than ± this × min_change: insufficient data
    min_change: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_MIN_CHANGE))


def _read_policy_table(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(_("Cannot read the policy file {path}: {error}. Check the path given with --policy.").format(path=path, error=error)) from error
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise InputError(_("The policy file {path} is not valid TOML or YAML: {error}").format(path=path, error=error)) from error
    table = data.get("compare", {}) if isinstance(data, dict) else {}
    if not isinstance(table, dict):
        raise InputError(_("The [compare] table in {path} must be a table of settings.").format(path=path))
    return table


def load_compare_settings(path: Path | None) -> CompareSettings:
    """Read the ``[compare]`` table of a policy file (.toml is TOML, anything else YAML); defaults without a file."""
    defaults = CompareSettings()
    if path is None:
        return defaults
    table = _read_policy_table(path)

    min_change = dict(defaults.min_change)
    for name, value in dict(table.get("min_change", {})).items():
        if name not in min_change:
            raise InputError(
                _("Unknown metric '{name}' in [compare.min_change] of {path}. Known metrics: {known}.").format(
                    name=name, path=path, known=", ".join(min_change)
                )
            )
        min_change[name] = _number(value, f"compare.min_change.{name}", path, low=0.0)

    confidence = _number(table.get("confidence", defaults.confidence), "compare.confidence", path, low=0.5, high=0.9999)
    resamples = int(_number(table.get("resamples", defaults.resamples), "compare.resamples", path, low=100, high=100000))
    seed = int(_number(table.get("seed", defaults.seed), "compare.seed", path, low=0))
    block_s = _number(table.get("block_s", defaults.block_s), "compare.block_s", path, low=0.5)
    min_samples = int(_number(table.get("min_samples", defaults.min_samples), "compare.min_samples", path, low=2))
    min_windows = int(_number(table.get("min_windows", defaults.min_windows), "compare.min_windows", path, low=0))
    max_width_factor = _number(table.get("max_width_factor", defaults.max_width_factor), "compare.max_width_factor", path, low=1.0)
    return CompareSettings(
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        block_s=block_s,
        min_samples=min_samples,
        min_windows=min_windows,
        max_width_factor=max_width_factor,
        min_change=min_change,
    )


def _number(value: Any, name: str, path: Path, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError(_("{field} in {path} must be a number, got {value!r}.").format(field=name, path=path, value=value))
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(
            _("{field} in {path} must be between {low} and {high}, got {value}.").format(
                field=name, path=path, low=low, high="∞" if high is None else high, value=value
            )
        )
    return float(value)


@dataclass(frozen=True)
class RunSide:
    """One compared run: where it is and what it ran."""

    run_dir: str
    run_id: str | None
    started_at: float | None
    deployment_code: str | None
    model: str | None
    ptu: int | None
    workload: str | None
    plan: str | None
    simulated: bool
    partial: bool


@dataclass
class _LoadedRun:
    side: RunSide
    stages: list[dict[str, Any]]
    records: list[dict[str, Any]]


def _read_json(path: Path, run_dir: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InputError(_("{path} is missing: {what} is not a ptu-verify run directory.").format(path=path, what=run_dir)) from error
    except ValueError as error:
        raise InputError(_("{path} is not valid JSON ({error}); the run directory {what} is damaged.").format(path=path, error=error, what=run_dir)) from error
    if not isinstance(value, dict):
        raise InputError(_("{path} must contain a JSON object.").format(path=path))
    return value


def load_run(run_dir: Path) -> _LoadedRun:
    """Read run.json, plan.json and the records of a run directory; InputError when one is unusable."""
    if not run_dir.is_dir():
        raise InputError(_("{path} is not a directory. Give two run directories written by ptu-verify run or locust -f.").format(path=run_dir))
    info = _read_json(run_dir / "run.json", run_dir)
    plan = _read_json(run_dir / "plan.json", run_dir)
    files = record_files(run_dir)
    if not files:
        raise InputError(_("{path} has no records*.jsonl file, so there is nothing to compare.").format(path=run_dir))
    read = read_jsonl(files)
    if not read["rows"]:
        raise InputError(
            _("{path} has no readable records ({files} empty or unparsable), so there is nothing to compare. Give a run that sent load.").format(
                path=run_dir, files=", ".join(file.name for file in files)
            )
        )
    if read["skipped_lines"]:
        logger.warning("%s: skipped %d unparsable record lines", run_dir, read["skipped_lines"])

    ptu = info.get("ptu")
    side = RunSide(
        run_dir=str(run_dir),
        run_id=info.get("run_id"),
        started_at=info.get("started_at"),
        deployment_code=info.get("deployment_code"),
        model=info.get("model"),
        ptu=int(ptu) if isinstance(ptu, (int, float)) else None,
        workload=info.get("workload"),
        plan=info.get("plan") or plan.get("plan"),
        simulated=bool(info.get("simulated")),
        partial=bool(info.get("partial")),
    )
    stages = [stage for stage in plan.get("stages", []) if isinstance(stage, dict) and "label" in stage]
    return _LoadedRun(side=side, stages=stages, records=read["rows"])


@dataclass(frozen=True)
class StageSample:
    """The measured records of one stage, cut into time blocks for the bootstrap."""

    span_s: float
    blocks: int
    # Per record: its block, and the values the metrics are computed from (NaN where missing).
    block_of_record: np.ndarray
    ok: np.ndarray  # bool
    throttled: np.ndarray  # bool
    tokens: np.ndarray  # input + output tokens of ok records, 0 otherwise
    ttft_s: np.ndarray
    speed_tps: np.ndarray


def _float_or_nan(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def stage_samples(records: list[dict[str, Any]], stage: dict[str, Any], settings: CompareSettings) -> StageSample:
    """Select the records started in the stage's measured span and assign each to a time block."""
    start = float(stage.get("measure_start_at", stage["start_at"]))
    end = float(stage["end_at"])
    span_s = max(end - start, 1e-9)
    blocks = max(settings.min_blocks, round(span_s / settings.block_s))

    chosen = [record for record in records if isinstance(record.get("started_at"), (int, float)) and start <= record["started_at"] < end]
    started = np.array([record["started_at"] for record in chosen], dtype=float)
    ok = np.array([record.get("outcome") == "ok" for record in chosen], dtype=bool)
    throttled = np.array([record.get("outcome") == "throttled" or record.get("status_code") == 429 for record in chosen], dtype=bool)
    tokens = np.array([(record.get("input_tokens") or 0) + (record.get("output_tokens") or 0) for record in chosen], dtype=float)
    block_of_record = np.minimum(((started - start) / span_s * blocks).astype(int), blocks - 1) if len(chosen) else np.zeros(0, dtype=int)
    return StageSample(
        span_s=span_s,
        blocks=blocks,
        block_of_record=block_of_record,
        ok=ok,
        throttled=throttled,
        tokens=np.where(ok, tokens, 0.0),
        ttft_s=np.array([_float_or_nan(record.get("ttft_s")) if record.get("outcome") == "ok" else math.nan for record in chosen]),
        speed_tps=np.array([_float_or_nan(record.get("gen_speed_tps")) if record.get("outcome") == "ok" else math.nan for record in chosen]),
    )


def _metric_values(sample: StageSample, weights: np.ndarray | None) -> dict[str, float]:
    """Compute every metric of a stage, with each record counted ``weights[i]`` times (None: once)."""
    counts = np.ones(len(sample.ok)) if weights is None else weights

    # A resample draws as many blocks as the stage has, so it spans the same time as the stage.
    results = {"achieved_tpm": float(np.sum(sample.tokens * counts)) / sample.span_s * 60.0}

    attempts = float(np.sum(counts))
    results["throttled_share"] = float(np.sum(sample.throttled * counts)) / attempts if attempts else math.nan
    for name, values, fraction in (("ttft_p50_s", sample.ttft_s, 0.5), ("ttft_p95_s", sample.ttft_s, 0.95), ("speed_p50_tps", sample.speed_tps, 0.5)):
        results[name] = _weighted_quantile(values, counts, fraction)
    return results


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, fraction: float) -> float:
    present = ~np.isnan(values) & (weights > 0)
    if not np.any(present):
        return math.nan
    repeated = np.repeat(values[present], weights[present].astype(int))
    return float(np.quantile(repeated, fraction))


def _sample_size(sample: StageSample, name: str) -> int:
    if name in ("ttft_p50_s", "ttft_p95_s"):
        return int(np.sum(~np.isnan(sample.ttft_s)))
    if name == "speed_p50_tps":
        return int(np.sum(~np.isnan(sample.speed_tps)))
    if name == "achieved_tpm":
        return int(np.sum(sample.ok))
    return len(sample.ok)


def _bootstrap(sample: StageSample, settings: CompareSettings, rng: np.random.Generator) -> dict[str, np.ndarray]:
    names = [metric.name for metric in METRICS]
    replicates = {name: np.empty(settings.resamples) for name in names}
    for index in range(settings.resamples):
        chosen = rng.integers(0, sample.blocks, size=sample.blocks)
        block_counts = np.bincount(chosen, minlength=sample.blocks)
        values = _metric_values(sample, block_counts[sample.block_of_record].astype(float))
        for name in names:
            replicates[name][index] = values[name]
    return replicates


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one stage in both runs, the difference and its bootstrap interval."""

    metric: str
    direction: Direction
    baseline: float | None
    current: float | None
    difference: float | None  # current - baseline
    difference_ci_low: float | None
    difference_ci_high: float | None
    relative_change: float | None  # difference / baseline
    min_change: float
    change_kind: Literal["relative", "absolute"]
    baseline_samples: int
    current_samples: int
    status: Status
    # Why the status is insufficient_data: few_samples, short_stage or wide_interval; None otherwise.
    insufficient_reason: str | None = None


@dataclass(frozen=True)
class StageComparison:
    """All compared metrics of one stage label."""

    label: str
    baseline_offered_tpm: float | None
    current_offered_tpm: float | None
    metrics: list[MetricComparison]

    @property
    def regressions(self) -> list[str]:
        """Names of the metrics that regressed in this stage."""
        return [metric.metric for metric in self.metrics if metric.status == "regression"]

    @property
    def all_insufficient(self) -> bool:
        """True when no metric of this stage had enough data to be judged."""
        return all(metric.status == "insufficient_data" for metric in self.metrics)


@dataclass(frozen=True)
class CompareResult:
    """The whole comparison, ready for compare.json and the HTML page."""

    baseline: RunSide
    current: RunSide
    settings: CompareSettings
    stages: list[StageComparison]
    unmatched_baseline_stages: list[str]
    unmatched_current_stages: list[str]
    notes: list[str]

    @property
    def regression_count(self) -> int:
        """Number of (stage, metric) pairs that regressed."""
        return sum(len(stage.regressions) for stage in self.stages)

    @property
    def judged_count(self) -> int:
        """Number of (stage, metric) pairs with enough data for a meaningful interval."""
        return sum(metric.status != "insufficient_data" for stage in self.stages for metric in stage.metrics)

    @property
    def exit_code(self) -> int:
        """1 when any metric regressed, 3 when no metric could be judged, 0 otherwise."""
        if self.regression_count:
            return 1
        return 0 if self.judged_count else 3

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form written to compare.json."""
        return {
            "schema": COMPARE_SCHEMA,
            "regression": bool(self.regression_count),
            "regression_count": self.regression_count,
            "judged_count": self.judged_count,
            "exit_code": self.exit_code,
            "baseline": asdict(self.baseline),
            "current": asdict(self.current),
            "settings": asdict(self.settings),
            "stages": [
                {
                    "label": stage.label,
                    "baseline_offered_tpm": stage.baseline_offered_tpm,
                    "current_offered_tpm": stage.current_offered_tpm,
                    "regressions": stage.regressions,
                    "all_insufficient": stage.all_insufficient,
                    "metrics": [asdict(metric) for metric in stage.metrics],
                }
                for stage in self.stages
            ],
            "unmatched_baseline_stages": self.unmatched_baseline_stages,
            "unmatched_current_stages": self.unmatched_current_stages,
            "notes": self.notes,
        }


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def _classify(info: MetricInfo, baseline: float, difference: float, low: float, high: float, min_change: float) -> Status:
    if info.change == "absolute":
        change = difference
    elif baseline:
        change = difference / baseline
    else:
        change = math.copysign(math.inf, difference) if difference else 0.0
    worse_if_positive = info.direction == "lower_is_better"
    if worse_if_positive:
        if low > 0 and change >= min_change:
            return "regression"
        if high < 0 and -change >= min_change:
            return "improvement"
    else:
        if high < 0 and -change >= min_change:
            return "regression"
        if low > 0 and change >= min_change:
            return "improvement"
    return "unchanged"


def compare_samples(
    baseline: StageSample, current: StageSample, settings: CompareSettings, *, tests: int = 1, seed_offset: int = 0
) -> list[MetricComparison]:
    """Compare every metric of one stage; the bootstrap is seeded, so the result is reproducible.

    ``tests`` is the number of (stage, metric) tests in the whole comparison, for the Bonferroni correction.
    """
    rng_baseline = np.random.default_rng([settings.seed, seed_offset, 0])
    rng_current = np.random.default_rng([settings.seed, seed_offset, 1])
    base_point = _metric_values(baseline, None)
    current_point = _metric_values(current, None)
    base_replicates = _bootstrap(baseline, settings, rng_baseline) if len(baseline.ok) else None
    current_replicates = _bootstrap(current, settings, rng_current) if len(current.ok) else None
    upper_probability = 1.0 - (1.0 - settings.confidence) / max(tests, 1) / 2.0

    short = min(baseline.span_s, current.span_s) < settings.min_windows * settings.block_s
    comparisons = []
    for info in METRICS:
        base_n, current_n = _sample_size(baseline, info.name), _sample_size(current, info.name)
        base_value, current_value = base_point[info.name], current_point[info.name]
        min_change = settings.min_change[info.name]
        enough = min(base_n, current_n) >= settings.min_samples and not (math.isnan(base_value) or math.isnan(current_value))
        if short or not enough or base_replicates is None or current_replicates is None:
            comparisons.append(
                MetricComparison(
                    info.name, info.direction, _none_if_nan(base_value), _none_if_nan(current_value),
                    None if math.isnan(current_value - base_value) else current_value - base_value,
                    None, None, None, min_change, info.change, base_n, current_n, "insufficient_data",
                    "short_stage" if short else "few_samples",
                )
            )  # fmt: skip
            continue

        difference = current_value - base_value
        base_error = _standard_error(base_replicates[info.name], baseline.blocks)
        current_error = _standard_error(current_replicates[info.name], current.blocks)
        error = math.hypot(base_error, current_error)
        t = _t_quantile(upper_probability, _welch_df(base_error, baseline.blocks, current_error, current.blocks))
        low, high = difference - t * error, difference + t * error
        relative = difference / base_value if base_value else None
        status: Status = _classify(info, base_value, difference, low, high, min_change) if not math.isnan(low) else "insufficient_data"
        reason = "wide_interval" if status == "insufficient_data" else None
        # An interval several minimum changes wide cannot show a change, so "unchanged" would mislead.
        scale = abs(base_value) if info.change == "relative" else 1.0
        if status == "unchanged" and (high - low) / 2.0 > settings.max_width_factor * min_change * scale:
            status, reason = "insufficient_data", "wide_interval"
        comparisons.append(
            MetricComparison(
                info.name, info.direction, base_value, current_value, difference, low, high, relative,
                min_change, info.change, base_n, current_n, status, reason,
            )
        )  # fmt: skip
    return comparisons


def _standard_error(replicates: np.ndarray, blocks: int) -> float:
    """Return the bootstrap standard error, widened by sqrt(n / (n - 1)) for the n resampled blocks."""
    present = replicates[~np.isnan(replicates)]
    if len(present) < 2:
        return math.nan
    return float(np.std(present, ddof=1)) * math.sqrt(blocks / max(blocks - 1, 1))


def _welch_df(error_a: float, blocks_a: int, error_b: float, blocks_b: int) -> float:
    """Return the Welch–Satterthwaite degrees of freedom of two standard errors from n - 1 blocks each."""
    numerator = (error_a**2 + error_b**2) ** 2
    denominator = error_a**4 / max(blocks_a - 1, 1) + error_b**4 / max(blocks_b - 1, 1)
    if not denominator or math.isnan(denominator):
        return float(max(blocks_a + blocks_b - 2, 1))
    return max(numerator / denominator, 1.0)


def _t_quantile(probability: float, df: float) -> float:
    """Return Student's t quantile by the Cornish–Fisher expansion around the normal quantile.

    Accurate to about 1 % for df >= 5 at the tail probabilities used here; numpy has no t quantile.
    """
    z = NormalDist().inv_cdf(probability)
    df = max(df, 3.0)
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def _check_comparable(baseline: RunSide, current: RunSide) -> list[str]:
    """Raise InputError when the runs ran different workloads or plans; return notes on lesser differences."""
    if baseline.workload != current.workload:
        raise InputError(
            _(
                "The runs used different workloads: {base_value} in {base_dir}, {current_value} in {current_dir}. "
                "compare needs two runs of the same workload and plan; rerun one with the other's --workload."
            ).format(base_value=baseline.workload, base_dir=baseline.run_dir, current_value=current.workload, current_dir=current.run_dir)
        )
    if baseline.plan != current.plan:
        raise InputError(
            _(
                "The runs used different plans: {base_value} in {base_dir}, {current_value} in {current_dir}. "
                "compare needs two runs of the same workload and plan; rerun one with the other's --plan."
            ).format(base_value=baseline.plan, base_dir=baseline.run_dir, current_value=current.plan, current_dir=current.run_dir)
        )

    notes = []
    if (baseline.model, baseline.ptu) != (current.model, current.ptu):
        notes.append(
            _("The runs target different capacities ({base_model} × {base_ptu} PTU vs {current_model} × {current_ptu} PTU); differences include that change.").format(
                base_model=baseline.model, base_ptu=baseline.ptu, current_model=current.model, current_ptu=current.ptu
            )
        )
    for side, name in ((baseline, _("baseline")), (current, _("current"))):
        if side.partial:
            notes.append(_("The {side} run is partial (interrupted); its later stages may be missing or short.").format(side=name))
    if baseline.simulated != current.simulated:
        notes.append(_("Only one of the runs was against the built-in simulator."))
    return notes


def compare_runs(baseline_dir: Path, current_dir: Path, settings: CompareSettings | None = None) -> CompareResult:
    """Compare two run directories stage by stage; InputError (exit 2) when they cannot be compared."""
    settings = settings or CompareSettings()
    baseline, current = load_run(baseline_dir), load_run(current_dir)
    notes = _check_comparable(baseline.side, current.side)

    current_by_label = {stage["label"]: stage for stage in current.stages}
    baseline_labels = [stage["label"] for stage in baseline.stages]
    matched = [stage for stage in baseline.stages if stage["label"] in current_by_label]
    if not matched:
        raise InputError(
            _("The runs have no stage label in common (baseline: {base}; current: {current}), so nothing can be compared.").format(
                base=", ".join(baseline_labels) or "-", current=", ".join(current_by_label) or "-"
            )
        )

    stages = []
    tests = len(matched) * len(METRICS)
    for index, base_stage in enumerate(matched):
        current_stage = current_by_label[base_stage["label"]]
        metrics = compare_samples(
            stage_samples(baseline.records, base_stage, settings),
            stage_samples(current.records, current_stage, settings),
            settings,
            tests=tests,
            seed_offset=index,
        )
        stages.append(StageComparison(base_stage["label"], base_stage.get("offered_tpm"), current_stage.get("offered_tpm"), metrics))

    starved = [stage.label for stage in stages if stage.all_insufficient]
    if starved:
        notes.insert(
            0,
            _(
                "Too few data to judge any metric at stage {stages}: a metric needs at least {samples} values in each run "
                "and an interval narrower than ±{factor:g} × its minimum change. Run longer stages."
            ).format(stages=", ".join(starved), samples=settings.min_samples, factor=settings.max_width_factor),
        )

    return CompareResult(
        baseline=baseline.side,
        current=current.side,
        settings=settings,
        stages=stages,
        unmatched_baseline_stages=[label for label in baseline_labels if label not in current_by_label],
        unmatched_current_stages=[label for label in current_by_label if label not in set(baseline_labels)],
        notes=notes,
    )


def write_compare_json(result: CompareResult, out_dir: Path) -> Path:
    """Write compare.json into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "compare.json"
    path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return path
