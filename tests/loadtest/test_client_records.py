"""Record helpers: secret scrubbing, retry hints, error classification and config validation."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from loadtest.client import ClientConfig
from loadtest.measure import classify_error, parse_retry_after, scrub_secrets
from ptu_verify.errors import InputError

KEY = "sk-test-fake-0000"


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {KEY}",
        f"authorization={KEY}",
        f"token Bearer {KEY} rejected",
        f"GET /v1?api_key={KEY}&x=1",
        f"api-key={KEY}",
        f"bad key {KEY}",
        "bad key sk-otherkey123456",
    ],
)
def test_scrub_removes_secrets(text: str) -> None:
    scrubbed = scrub_secrets(text, KEY)
    assert KEY not in scrubbed
    assert "sk-otherkey123456" not in scrubbed
    assert "***" in scrubbed


def test_scrub_keeps_ordinary_text() -> None:
    assert scrub_secrets("Allocated quota exceeded, please retry.", KEY) == "Allocated quota exceeded, please retry."


def test_scrub_key_without_sk_prefix() -> None:
    assert scrub_secrets("echo: abc123secret", "abc123secret") == "echo: ***"


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert parse_retry_after({"Retry-After": "3"}) == pytest.approx(3.0)
    assert parse_retry_after({"Retry-After": "3", "retry-after-ms": "100"}) == pytest.approx(0.1)
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    in_ten_s = parse_retry_after({"Retry-After": formatdate(time.time() + 10, usegmt=True)})
    assert in_ten_s is not None
    assert 8.0 <= in_ten_s <= 10.0


def test_classify_error_by_status_and_code() -> None:
    assert classify_error(429, None) == "throttled"
    assert classify_error(400, "Throttling.AllocationQuota") == "throttled"
    assert classify_error(200, "limit_burst_rate") == "throttled"
    assert classify_error(503, "ModelUnavailable") == "http_error"
    assert classify_error(401, "InvalidApiKey") == "http_error"


@pytest.mark.parametrize(
    ("field", "value"),
    [("api", "azure"), ("transport", "httpx"), ("base_url", "127.0.0.1:8000"), ("deployment_code", ""), ("request_timeout_s", 0.0), ("max_attempts", 0)],
)
def test_config_rejects_invalid_value(field: str, value: object) -> None:
    options: dict[str, object] = {"api": "openai", "transport": "fast", "base_url": "http://127.0.0.1:1/compatible-mode/v1", "deployment_code": "d"}
    options[field] = value
    with pytest.raises(InputError, match=field):
        ClientConfig(**options)  # type: ignore[arg-type]
