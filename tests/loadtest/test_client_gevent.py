"""All transports in a gevent-patched process, as in a Locust worker: concurrent greenlets and deadlines.

Monkey-patching cannot be undone, so the checks run in a subprocess that prints its records as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import json, sys
import gevent
sys.path.insert(0, sys.argv[1])
from scripted_server import (DONE, ScriptedServer, compat_chunk, compat_usage, native_event, sse_script)
from loadtest.client import ClientConfig, StreamClient
from ptu_verify.requests import RequestSpec

SPEC = RequestSpec(messages=[{"role": "user", "content": "hi"}], max_tokens=16)

def respond(request, index):
    stall = b"stall" in request.body
    native = request.path.startswith("/api/v1")
    if native:
        events = [(0.20, native_event(1, content="a", output_tokens=1))]
        events.append((3.0 if stall else 0.25, native_event(2, content="b", output_tokens=2, finish_reason="stop")))
    else:
        events = [(0.20, compat_chunk({"content": "a"}))]
        events.append((3.0 if stall else 0.25, compat_chunk({"content": "b"}, finish_reason="stop") + compat_usage(5, 2) + DONE))
    return sse_script(events, request_id=f"req-{index}")

results = {}
with ScriptedServer(respond) as server:
    for api, path in (("openai", "/compatible-mode/v1"), ("dashscope", "/api/v1")):
        for transport in ("fast", "sdk"):
            client = StreamClient(ClientConfig(api=api, transport=transport, base_url=server.base + path,
                                               deployment_code="qwen-plus-test", request_timeout_s=0.6))
            normal = [gevent.spawn(client.send, SPEC) for _ in range(4)]
            stalled = gevent.spawn(client.send, RequestSpec(messages=[{"role": "user", "content": "stall"}], max_tokens=16))
            gevent.joinall(normal + [stalled], timeout=10, raise_error=True)
            client.close()
            results[f"{api}-{transport}"] = {"normal": [g.value[0] for g in normal], "stalled": stalled.value[0]}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    test_dir = Path(__file__).parent
    completed = subprocess.run([sys.executable, "-c", SCRIPT, str(test_dir)], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return parsed


@pytest.mark.parametrize("combination", ["openai-fast", "openai-sdk", "dashscope-fast", "dashscope-sdk"])
def test_gevent_streams_and_deadline(results: dict[str, Any], combination: str) -> None:
    normal = results[combination]["normal"]
    assert [record["outcome"] for record in normal] == ["ok"] * 4
    assert len({record["request_id"] for record in normal}) == 4
    for record in normal:
        # Concurrent greenlets: each stream is timed from its own send, none waited for another.
        assert 0.20 <= record["ttft_s"] < 0.25
        assert 0.25 <= record["e2e_s"] < 0.30
        assert record["output_tokens"] == 2

    stalled = results[combination]["stalled"]
    assert stalled["outcome"] == "timeout"
    assert 0.20 <= stalled["ttft_s"] < 0.25
    # Under gevent the whole attempt is bounded, also for the SDKs. The deadline starts before an SDK
    # builds the request and e2e_s at the HTTP send, so with an SDK e2e_s may end a little before 0.6.
    lowest_s = 0.60 if combination.endswith("fast") else 0.50
    assert lowest_s <= stalled["e2e_s"] < 0.65
