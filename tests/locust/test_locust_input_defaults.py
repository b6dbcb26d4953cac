"""The warm-up default follows a short --stage-duration; --host must be a usable URL."""

from __future__ import annotations

import configargparse
import pytest

from loadtest.options import base_url_problem, load_options, register_options
from loadtest.plans import build_plan
from ptu_verify.errors import InputError

HOST = "http://127.0.0.1:1/compatible-mode/v1"


def _options(*args: str, host: str = HOST) -> object:
    parser = configargparse.ArgumentParser(default_config_files=[])
    register_options(parser)
    return load_options(parser.parse_args(["--deployment-code", "qwen-plus-test", *args]), host)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "warmup_s"),
    [
        (("--plan", "step", "--stage-duration", "10"), 2.5),  # a quarter of the stage
        (("--plan", "step", "--stage-duration", "400"), 30.0),  # the step plan's default
        (("--plan", "acceptance", "--stage-duration", "60"), 15.0),
        (("--plan", "step", "--stage-duration", "10", "--warmup", "0"), 0.0),  # given: kept
        (("--plan", "step"), None),  # no stage duration: the plan decides
    ],
)
def test_default_warmup_scales_with_stage_duration(args: tuple[str, ...], warmup_s: float | None) -> None:
    assert _options(*args).warmup_s == warmup_s  # type: ignore[attr-defined]


def test_short_stage_without_warmup_builds_a_plan() -> None:
    options = _options("--plan", "step", "--stage-duration", "10", "--model", "qwen-plus-2025-04-28", "--ptu", "8")
    plan = build_plan(options, 1000.0)  # type: ignore[arg-type]
    assert {stage.warmup_s for stage in plan.stages} == {2.5}


@pytest.mark.parametrize("host", ["not-a-url", "ftp://127.0.0.1/x", "http://", "http://127.0.0.1:99999/compatible-mode/v1"])
def test_unusable_host_is_an_input_error(host: str) -> None:
    with pytest.raises(InputError, match="https://"):
        _options(host=host)


@pytest.mark.parametrize(
    ("url", "api", "problem"),
    [
        ("https://dashscope.aliyuncs.com/compatible-mode/v1", "openai", None),
        ("https://dashscope.aliyuncs.com/compatible-mode/v1/", "openai", None),
        ("https://dashscope.aliyuncs.com/api/v1", "dashscope", None),
        ("https://dashscope.aliyuncs.com/api/v1", "openai", "/compatible-mode/v1"),
        ("https://dashscope.aliyuncs.com", "dashscope", "/api/v1"),
    ],
)
def test_base_url_path_must_match_the_api(url: str, api: str, problem: str | None) -> None:
    found = base_url_problem(url, "--base-url", api)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
