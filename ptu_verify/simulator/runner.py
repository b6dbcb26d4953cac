"""Running the simulator: in a background thread for tests and ``ptu-verify run``, or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from ..errors import InputError, RuntimeFailure
from ..i18n import _
from .config import SimulatorConfig
from .server import SimulatorState, build_app, shared_pool

__all__ = ["RunningSimulator", "bind_socket", "serve_forever", "start_simulator"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket; raise InputError when the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _canon, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as error:
        raise InputError(
            _("Cannot listen on {host}:{port}: {error}. Choose another --host or --port (0 picks a free port).").format(
                host=host, port=port, error=error.strerror or error
            )
        ) from None
    sock.setblocking(False)
    return sock


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class RunningSimulator:
    """A simulator serving from a background thread with its own asyncio loop. Use as a context manager."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        shared_pool()  # build the token pool (about a second) before the server starts taking requests
        self.state = SimulatorState(config, clock)
        self._sock = bind_socket(config.host, config.port)
        self.base_url = _base_url(self._sock)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: Exception | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, name="ptu-verify-simulator", daemon=True)

    @property
    def openai_base_url(self) -> str:
        """Base URL for the OpenAI SDK: ``base_url + /compatible-mode/v1``."""
        return self.base_url + "/compatible-mode/v1"

    @property
    def dashscope_base_url(self) -> str:
        """Base URL for the DashScope SDK: ``base_url + /api/v1``."""
        return self.base_url + "/api/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except Exception as error:  # noqa: BLE001 - handed to the starting thread, which raises it
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._cleanup())
        self._loop.close()
        self._stopped.set()

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_app(self.state), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> RunningSimulator:
        """Start serving and return once the server accepts connections."""
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S) or self._error is not None:
            raise RuntimeFailure(f"The simulator did not start: {self._error or 'timed out'}")
        logger.info("Simulator for %s (%d PTU) listening on %s", self.config.model_version, self.config.ptu, self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT_S)
        logger.info("Simulator on %s stopped", self.base_url)

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the simulator's loop (where its state lives) and return the result."""

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(_STOP_TIMEOUT_S)

    def stats(self, include_requests: bool = True) -> dict[str, Any]:
        """Return the same document as GET /sim/stats (``?requests=0`` when include_requests is False)."""
        # Serialised on the simulator's loop: a snapshot, not live entries that requests still update.
        document: str = self.call(lambda: json.dumps(self.state.stats_json(include_requests)))
        result: dict[str, Any] = json.loads(document)
        return result

    def reset(self) -> None:
        """Forget statistics, limiter usage and cached prefixes, as POST /sim/reset."""
        self.call(self.state.reset)

    def __enter__(self) -> RunningSimulator:  # noqa: PYI034 - final class in practice
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()


def start_simulator(config: SimulatorConfig, *, clock: Callable[[], float] = time.monotonic) -> RunningSimulator:
    """Start a simulator on ``config.host``:``config.port`` (port 0 picks a free one) in a background thread.

    ``clock`` is the limiter's monotonic time source, replaceable in tests.
    """
    return RunningSimulator(config, clock).start()


def serve_forever(config: SimulatorConfig, announce: Callable[[str], None]) -> None:
    """Serve in the foreground until SIGINT or SIGTERM; ``announce`` gets the base URL once listening."""
    shared_pool()
    state = SimulatorState(config)
    sock = bind_socket(config.host, config.port)

    async def main() -> None:
        runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        logger.info("Simulator for %s (%d PTU) listening on %s", config.model_version, config.ptu, _base_url(sock))
        announce(_base_url(sock))
        await stop.wait()
        logger.info("Simulator stopping after a signal")
        await runner.cleanup()

    asyncio.run(main())
