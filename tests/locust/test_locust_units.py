"""Fast tests of the Locust-side building blocks: options, plans, capacity search, dispatch, records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import configargparse
import gevent
import pytest

from loadtest.controller import PlanController
from loadtest.dispatch import Dispatcher, StageOrder, arrival_times, trace_arrivals
from loadtest.health import DispatchCounters, assess_generator
from loadtest.options import (
    find_mismatches,
    load_options,
    option_defaults,
    register_options,
)
from loadtest.plans import CapacitySearch, build_plan, estimate_plan, trace_timing
from loadtest.recorder import JsonlWriter, RecentRecords, redact_host
from ptu_verify.errors import InputError
from ptu_verify.requests import RequestSpec


def _parse(args: list[str], config_files: list[str] | None = None) -> object:
    # Locust's parser is a configargparse parser; importing locust here would monkey-patch the test process.
    parser = configargparse.ArgumentParser(default_config_files=config_files or [])
    register_options(parser)
    return parser.parse_args(args)


def _options(*args: str) -> object:
    return load_options(_parse(["--deployment-code", "qwen-plus-test", *args]), "http://127.0.0.1:1/compatible-mode/v1")  # type: ignore[arg-type]


def test_options_from_env_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCUST_DEPLOYMENT_CODE", "qwen-plus-env")
    config = tmp_path / "locust.conf"
    config.write_text("api = dashscope\nplan = step\nstages = 0.5,1\n", encoding="utf-8")
    parsed = vars(_parse([], [str(config)]))
    assert parsed["deployment_code"] == "qwen-plus-env"
    assert parsed["api"] == "dashscope"
    assert parsed["plan"] == "step"
    assert parsed["stages"] == "0.5,1"


def test_option_mismatch_ignores_defaults() -> None:
    master = {**option_defaults(), "deployment_code": "qwen-plus-a", "ptu": 8}
    assert find_mismatches(option_defaults(), master) == {}
    worker = {**option_defaults(), "deployment_code": "qwen-plus-b"}
    assert find_mismatches(worker, master) == {"deployment_code": {"worker": "qwen-plus-b", "master": "qwen-plus-a"}}


def test_invalid_options_name_the_flag() -> None:
    with pytest.raises(InputError, match="--stages"):
        build_plan(_options("--plan", "step", "--model", "qwen-plus", "--ptu", "8", "--stages", "0.5,x"), 100.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--model"):
        build_plan(_options("--plan", "search"), 100.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--arrival-qpm"):
        build_plan(_options("--plan", "rate"), 100.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="--deployment-code"):
        load_options(_parse([]), "http://127.0.0.1:1")  # type: ignore[arg-type]


def test_step_plan_default_stages_and_estimate() -> None:
    # qwen-plus: 25,000 TPM and 25 QPM per PTU; at 2,000 tokens per request the TPM limit binds.
    plan = build_plan(_options("--plan", "step", "--model", "qwen-plus-2025-04-28", "--ptu", "8"), 2000.0)  # type: ignore[arg-type]
    assert [stage.fraction for stage in plan.stages] == [0.5, 0.75, 0.9, 1.0, 1.1, 1.25]
    assert plan.capacity is not None and plan.capacity.binding_limit == "tpm"
    assert plan.stages[3].offered_tpm == 200_000
    assert plan.stages[3].offered_qpm == 100
    duration_s, tokens = estimate_plan(plan, 8)
    assert duration_s == 900
    assert tokens == pytest.approx(sum(f * 200_000 * 2.5 for f in (0.5, 0.75, 0.9, 1.0, 1.1, 1.25)))


def test_qpm_binds_for_small_requests() -> None:
    plan = build_plan(_options("--plan", "step", "--model", "qwen-plus-2025-04-28", "--ptu", "8", "--stages", "1"), 100.0)  # type: ignore[arg-type]
    assert plan.capacity is not None and plan.capacity.binding_limit == "qpm"
    assert plan.stages[0].offered_qpm == pytest.approx(200)
    assert plan.stages[0].offered_tpm == pytest.approx(20_000)


def _run_search(true_fraction: float) -> CapacitySearch:
    """Drive the search against an ideal token bucket whose sustained capacity is true_fraction."""
    capacity_tpm = 100_000.0
    search = CapacitySearch(capacity_tpm)
    while (fraction := search.next_fraction()) is not None:
        throttled = max(0.0, (fraction - true_fraction) / fraction)
        achieved = min(fraction, true_fraction) * capacity_tpm
        search.observe(fraction, throttled, achieved, attempts=500)
    return search


@pytest.mark.parametrize("true_fraction", [0.7, 1.0, 1.6, 0.3])
def test_capacity_search_converges(true_fraction: float) -> None:
    search = _run_search(true_fraction)
    result = search.result()
    assert result["converged"]
    assert abs(result["sustained_fraction"] - true_fraction) <= 0.05
    assert result["sustained_fraction"] <= true_fraction * 1.01 + 1e-9
    assert result["stages"] <= 5, "the search must use fewer stages than the 6-stage step plan"


def test_poisson_arrivals_match_rate() -> None:
    import random

    order = StageOrder(label="s", start_at=0.0, end_at=600.0, qpm=120.0)
    count = sum(1 for _ in arrival_times(order, random.Random(3)))
    assert 1100 < count < 1300


def test_constant_arrivals_interleave_workers() -> None:
    import random

    times = sorted(
        at
        for slot in range(2)
        for at in arrival_times(StageOrder(label="s", start_at=0.0, end_at=1.0, qpm=600.0, arrival="constant", slot=slot, slots=2), random.Random(0))
    )
    assert times == pytest.approx([index * 0.05 for index in range(20)])


def _spec() -> RequestSpec:
    return RequestSpec(messages=[{"role": "user", "content": "hi"}], max_tokens=8)


def _wait_for_dispatched(counters: DispatchCounters, label: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if label in counters.by_stage and counters.by_stage[label].dispatched >= count:
            return
        gevent.sleep(0.05)
    raise AssertionError(f"only {counters.by_stage.get(label)} dispatched")


def test_dispatcher_drops_at_in_flight_cap() -> None:
    counters = DispatchCounters()
    sent: list[float] = []

    def send(spec: RequestSpec, stage: str, scheduled_at: float) -> None:
        sent.append(scheduled_at)
        gevent.sleep(5)

    dispatcher = Dispatcher(send, _spec, counters, max_in_flight=3)
    start = time.time() + 0.1
    dispatcher.add(StageOrder(label="cap", start_at=start, end_at=start + 1.0, qpm=600.0, arrival="constant"))
    _wait_for_dispatched(counters, "cap", 10)
    dispatcher.stop()
    dispatcher.kill_in_flight()
    assert counters.by_stage["cap"].as_dict() == {"dispatched": 10, "late": 0, "dropped": 7}
    assert len(sent) == 3


def test_dispatcher_counts_late_dispatches() -> None:
    counters = DispatchCounters()
    calls = {"count": 0}

    def slow_first_spec() -> RequestSpec:
        # Burn 0.55 s of CPU on the first request: arrivals due at 0, 0.1 … 0.4 s leave late.
        calls["count"] += 1
        if calls["count"] == 1:
            until = time.perf_counter() + 0.55
            while time.perf_counter() < until:
                pass
        return _spec()

    dispatcher = Dispatcher(lambda spec, stage, at: None, slow_first_spec, counters, max_in_flight=100)
    start = time.time() + 0.1
    dispatcher.add(StageOrder(label="late", start_at=start, end_at=start + 1.0, qpm=600.0, arrival="constant"))
    _wait_for_dispatched(counters, "late", 10)
    dispatcher.stop()
    assert counters.by_stage["late"].as_dict() == {"dispatched": 10, "late": 5, "dropped": 0}


def test_generator_verdict_threshold() -> None:
    on_time = assess_generator({"s": {"dispatched": 1000, "late": 5, "dropped": 5}}, [])
    assert not on_time.behind
    behind = assess_generator({"s": {"dispatched": 1000, "late": 8, "dropped": 3}}, [])
    assert behind.behind
    assert behind.reasons[0].startswith("8 late and 3 dropped of 1000")
    lagging = assess_generator({}, [{"cpu_percent": 99.0, "loop_lag_s": 0.3}] * 4 + [{"cpu_percent": 10.0, "loop_lag_s": 0.0}] * 10)
    assert lagging.behind
    assert lagging.max_cpu_percent == 99.0


def test_writer_flushes_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    writer = JsonlWriter(path)
    writer.write([{"n": 1}, {"n": 2}])
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and path.stat().st_size == 0:
        gevent.sleep(0.02)
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2]
    writer.close()


def test_recent_records_window_by_completion() -> None:
    recent = RecentRecords()
    now = time.time()
    recent.add(
        [
            {"started_at": now - 10, "e2e_s": 9.5, "outcome": "ok", "input_tokens": 10, "output_tokens": 20},
            {"started_at": now - 2, "e2e_s": 0.01, "outcome": "throttled", "input_tokens": None, "output_tokens": None},
            {"started_at": now - 30, "e2e_s": 1.0, "outcome": "ok", "input_tokens": 5, "output_tokens": 5},
        ]
    )
    summary = recent.summarize(now - 5, now)
    assert (summary.attempts, summary.ok, summary.throttled, summary.ok_tokens) == (2, 1, 1, 30)
    assert summary.throttled_share == 0.5
    assert recent.total_tokens == 40


def test_redact_host_drops_credentials() -> None:
    assert redact_host("https://user:secret@example.com:8443/api/v1?key=sk-1#x") == "https://example.com:8443/api/v1"


def test_trace_timing_and_worker_split() -> None:
    specs = [RequestSpec(messages=[{"role": "user", "content": "x"}], max_tokens=50, expected_input_tokens=50, trace_offset_s=float(index)) for index in range(10)]
    # 10 requests of 100 tokens over 9 s: 6,667 TPM as recorded.
    time_scale, duration_s, recorded_tpm = trace_timing(specs, speedup=1.0, target_tpm=13_333.3)
    assert recorded_tpm == pytest.approx(6666.7, rel=1e-3)
    assert time_scale == pytest.approx(0.5, rel=1e-3)
    assert duration_s == pytest.approx(9 * 0.5 + 1.0, rel=1e-3)
    assert trace_timing(specs, speedup=4.0, target_tpm=None)[0] == 0.25

    order = StageOrder(label="trace", start_at=100.0, end_at=110.0, qpm=0.0, arrival="trace", slot=1, slots=2, time_scale=0.5)
    assert [at for at, _spec in trace_arrivals(specs, order)] == [100.5, 101.5, 102.5, 103.5, 104.5]


class _FakeDelivery:
    def slots(self) -> list[str]:
        return ["local"]

    def send_order(self, worker_id: str, order: StageOrder) -> None:
        return None

    def send_cut(self, label: str, end_at: float) -> None:
        return None


def test_recalibration_rescales_later_stages(tmp_path: Path) -> None:
    from loadtest.recorder import RunDirectory

    options = _options("--plan", "step", "--model", "qwen-plus-2025-04-28", "--ptu", "8", "--stages", "0.5,1")
    plan = build_plan(options, 2000.0)  # type: ignore[arg-type]
    run_directory = RunDirectory(tmp_path)
    controller = PlanController(options, plan, run_directory, _FakeDelivery(), lambda reason: None, expected_tokens_per_request=2000.0)  # type: ignore[arg-type]
    now = time.time()
    first = controller._place(plan.stages[0], now - 10)
    second = controller._place(plan.stages[1], now)
    # Requests of 3,000 tokens instead of the expected 2,000: 50 % more.
    run_directory.add_records([{"started_at": now - 5, "e2e_s": 1.0, "outcome": "ok", "input_tokens": 1000, "output_tokens": 2000}] * 12)

    assert controller._recalibrate(first)
    controller._update_stages([second])
    assert controller.info["tokens_per_request"] == 3000
    calibration = controller.info["calibration"]
    assert calibration is not None
    assert calibration["observed_requests"] == 12
    assert second["offered_tpm"] == 200_000  # 1.0 × the TPM limit, which still binds
    assert second["offered_qpm"] == pytest.approx(200_000 / 3000)
    run_directory.close()


def test_loopback_hosts_skip_the_estimate_print() -> None:
    from loadtest.options import is_loopback

    assert is_loopback("http://127.0.0.1:8000/compatible-mode/v1")
    assert is_loopback("http://localhost:8000/api/v1")
    assert is_loopback("http://[::1]:8000/api/v1")
    assert not is_loopback("https://dashscope.aliyuncs.com/compatible-mode/v1")


def test_worker_seed_differs_per_worker() -> None:
    from loadtest.options import worker_seed

    assert worker_seed(7, "local") == 7
    assert worker_seed(None, "w1") is None
    assert worker_seed(7, "w0") != worker_seed(7, "w1")
    assert worker_seed(7, "w1") == worker_seed(7, "w1")
