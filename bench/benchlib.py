"""Helpers shared by the bench/ scripts: machine description, CPU pinning, simulator subprocess, JSON output.

The scripts import this module as ``benchlib`` (Python puts the script's folder on sys.path).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LIBRARIES = ("ptu-verify", "aiohttp", "gevent", "geventhttpclient", "locust", "openai", "httpx", "dashscope", "requests", "numpy", "pandas", "orjson", "jinja2")

# Core of the load generator and core of the simulator on a 2-core machine.
GENERATOR_CORE = 0
SIMULATOR_CORE = 1


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Return the machine and software a figure was measured on."""
    versions: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": versions,
    }


def print_machine(info: dict[str, Any]) -> None:
    """Print the machine description as the first lines of a benchmark's output."""
    libraries = ", ".join(f"{name} {version}" for name, version in info["libraries"].items())
    print(f"machine: {info['cpu_model']}, {info['cores']} cores, Python {info['python']}, {info['platform']}")
    print(f"libraries: {libraries}")


def pin_to(core: int | None, pid: int = 0) -> None:
    """Pin process ``pid`` (0: this one) to one core when the machine has more than one; no-op otherwise."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return
    available = os.sched_getaffinity(0)
    if core in available and len(available) > 1:
        os.sched_setaffinity(pid, {core})


def write_result(name: str, result: dict[str, Any], out: Path | None) -> Path:
    """Write ``result`` as JSON to ``out`` (default bench/results/<name>.json) and return the path."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


def header(argv: Sequence[str]) -> dict[str, Any]:
    """Return the fields every result file starts with: date, command line, machine."""
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python", *argv]),
        "machine": machine(),
        # Other processes share the cores: a high load average makes every figure of the run less exact.
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "nice": os.nice(0),
        **git_state(),
    }


def git_state() -> dict[str, Any]:
    """Return the commit the code was measured at and the tracked files that differed from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=BENCH_DIR, capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "modified_files": []}
    return {"git_commit": commit, "modified_files": sorted(line[3:] for line in status.splitlines() if line[3:])}


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class SimulatorProcess:
    """``ptu-verify simulate`` in a subprocess pinned to one core, with settings from a TOML file."""

    def __init__(self, settings: dict[str, Any], *, model: str = "qwen-turbo-2025-04-28", ptu: int = 4, deployment_code: str = "qwen-turbo-bench", core: int | None = SIMULATOR_CORE) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="ptu-bench-sim-")
        config_path = Path(self._folder.name) / "simulator.toml"
        config_path.write_text("".join(f"{key} = {_toml(value)}\n" for key, value in settings.items()), encoding="utf-8")
        command = [
            sys.executable, "-c", "import sys; from ptu_verify.cli import main; sys.exit(main())",
            "simulate", "--model", model, "--ptu", str(ptu), "--deployment-code", deployment_code,
            "--host", "127.0.0.1", "--port", "0", "--seed", "1", "--config", str(config_path),
        ]
        self.deployment_code = deployment_code
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        pin_to(core, self.process.pid)  # pinned before it starts serving (it prints after importing)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("Listening on "):
            self.process.kill()
            raise SystemExit(f"the simulator did not start: {line!r}")
        self.base_url = line.split()[-1]

    @property
    def openai_url(self) -> str:
        return self.base_url + "/compatible-mode/v1"

    @property
    def dashscope_url(self) -> str:
        return self.base_url + "/api/v1"

    def cpu_seconds(self) -> float:
        """Return the CPU time the simulator used so far (user + system)."""
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stats(self) -> dict[str, Any]:
        """Return GET /sim/stats."""
        import urllib.request

        with urllib.request.urlopen(self.base_url + "/sim/stats", timeout=60) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def reset(self) -> None:
        """POST /sim/reset."""
        import urllib.request

        request = urllib.request.Request(self.base_url + "/sim/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self) -> None:
        """Stop the simulator (SIGTERM, then SIGKILL after 15 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._folder.cleanup()

    def __enter__(self) -> SimulatorProcess:  # noqa: PYI034 - final class in practice
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def run_child(argv: list[str], core: int | None, timeout_s: float) -> dict[str, Any]:
    """Run ``python argv`` pinned to ``core`` and return the JSON object its last stdout line holds."""
    started = time.perf_counter()
    with subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        pin_to(core, process.pid)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            raise SystemExit(f"child {argv} did not finish within {timeout_s:g} s") from None
    completed = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    if completed.returncode != 0:
        raise SystemExit(f"child {argv} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"child {argv} printed no JSON:\n{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result.setdefault("child_wall_s", time.perf_counter() - started)
    return result
