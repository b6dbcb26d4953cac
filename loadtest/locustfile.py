"""Locust entry point of ptu-verify: streaming chat load against a Bailian PTU deployment.

    export DASHSCOPE_API_KEY=...
    locust -f loadtest/locustfile.py --headless -u 20 -r 20 -t 5m \\
        --host https://dashscope.aliyuncs.com/compatible-mode/v1 --deployment-code qwen-plus-d824b8ad

Our options (``locust -f loadtest/locustfile.py --help``, group "ptu-verify") choose the API, the
transport, the workload, the run directory and the load plan. docs/locust.md describes them.
"""

from __future__ import annotations

from locust import events

from loadtest.runtime import install
from loadtest.users import PTUUser

__all__ = ["PTUUser"]

install(events)
