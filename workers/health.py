"""The worker's HTTP server: liveness, readiness and Prometheus metrics, on the worker's own loop.

- ``GET /healthz`` (liveness): 200, or 503 once the worker hit a fatal error or the watchdog
  reports a stalled partition (restarting is the remedy a liveness probe applies).
- ``GET /readyz`` (readiness): 503 during the cold-start bootstrap (until the terminal table has
  caught up), while draining after SIGTERM, after a fatal error, and while any assigned partition
  is stalled; 200 otherwise. The JSON body says why.
- ``GET /metrics``: Prometheus text format (``workers.metrics``).
- With env ``FRAUDSTREAM_TEST_HOOKS=1`` only: ``POST /debug/pause?partition=N`` and
  ``POST /debug/resume?partition=N`` stop and restart fetching one transactions partition, so
  that tests can stall a partition for real, and ``POST /debug/kill?component=NAME`` cancels a
  supervised component (``Supervisor``; its names are in ``workers/app.py``), so that tests can
  watch a death for real. Without the variable these routes do not exist.

The listening socket is bound by ``bind`` before the worker starts (a port in use is a start-up
refusal naming ``--metrics-port``); aiohttp serves it once the event loop runs. Faust's own web
server stays disabled.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from schemas.errors import ConfigError
from workers.metrics import CONTENT_TYPE, Metrics
from workers.watchdog import Watchdog

log = logging.getLogger("fraudstream.health")


def bind(host: str, port: int) -> socket.socket | None:
    """The server's listening socket (None when ``port`` is 0: no server); ``ConfigError`` when taken."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"--metrics-host {host!r} does not resolve ({exc}) (env FRAUDSTREAM_METRICS_HOST)") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT, not one in use
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--metrics-port {port} on {host} is already in use: give each worker on this host "
                              f"its own port, or 0 to disable the health/metrics server "
                              f"(env FRAUDSTREAM_METRICS_PORT)") from exc
        raise ConfigError(f"--metrics-port {port} on --metrics-host {host}: cannot listen ({exc}) "
                          f"(env FRAUDSTREAM_METRICS_PORT / FRAUDSTREAM_METRICS_HOST)") from exc
    sock.setblocking(False)
    return sock


@dataclass
class Health:
    """What the probes answer from: lifecycle flags set by the app, and the watchdog's last sample."""

    watchdog: Watchdog
    ready: bool = False
    draining: bool = False
    fatal: str | None = None
    started: float = field(default_factory=time.monotonic)
    assigned: Callable[[], set[int]] = field(default=lambda: set())

    def _stalled(self) -> dict[str, Any]:
        return {str(p): {"lag": h.lag, "end": h.end, "position": h.position, "stalled_for_s": round(h.stalled_for_s, 1)}
                for p, h in sorted(self.watchdog.stalled().items())}

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        stalled = self._stalled()
        if self.fatal is not None:
            return False, {"status": "fatal", "reason": f"fatal error {self.fatal}"}
        if stalled:
            return False, {"status": "stalled", "reason": f"partitions {', '.join(stalled)} make no progress",
                           "stalled": stalled}
        return True, {"status": "ok", "uptime_s": round(time.monotonic() - self.started, 1)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.fatal is not None:
            return False, {"ready": False, "reason": f"fatal error {self.fatal}"}
        if self.draining:
            return False, {"ready": False, "reason": "draining after SIGTERM"}
        if not self.ready:
            return False, {"ready": False, "reason": "bootstrapping: the terminal table is catching up"}
        stalled = self._stalled()
        if stalled:
            return False, {"ready": False, "reason": f"stalled partitions: {', '.join(stalled)}", "stalled": stalled}
        lags = self.watchdog.lags()
        return True, {"ready": True, "assigned": sorted(self.assigned()),
                      "lag": {str(p): lag for p, lag in sorted(lags.items())}}

    def is_ready(self) -> bool:
        return self.readiness()[0]


class Supervisor:
    """Background components that must run as long as the worker does (the terminal-table reader,
    the label aggregator, the watchdog, the consumer, the flusher, the stats publisher): the first
    to end — raising, cancelled or returning — while the worker is not stopping is fatal:
    ``on_death(name, exception or None)``, once; ``first`` keeps it. ``spawn`` starts a task the
    supervisor owns (``stop`` cancels those); ``watch`` adopts one its component owns."""

    def __init__(self, on_death: Callable[[str, BaseException | None], None]) -> None:
        self.on_death = on_death
        self.stopping = False
        self.first: tuple[str, BaseException | None] | None = None
        self.tasks: dict[str, asyncio.Future[Any]] = {}
        self.owned: set[str] = set()

    def watch(self, name: str, task: asyncio.Future[Any] | None) -> None:
        if task is None:
            raise RuntimeError(f"component {name} has no task to supervise (not started)")
        self.tasks[name] = task
        task.add_done_callback(lambda t: self._ended(name, t))

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.owned.add(name)
        self.watch(name, task)
        return task

    def stop(self) -> None:
        """The worker is stopping: components may end from now on; the ones spawned here are cancelled."""
        self.stopping = True
        for name in self.owned:
            self.tasks[name].cancel()

    def kill(self, name: str) -> bool:
        """Cancel a component (the test hook): False when there is none of that name."""
        task = self.tasks.get(name)
        if task is None:
            return False
        task.cancel()
        return True

    def _ended(self, name: str, task: asyncio.Future[Any]) -> None:
        if self.stopping or self.first is not None:
            return
        self.first = name, None if task.cancelled() else task.exception()
        self.on_death(*self.first)


def _json(ok: bool, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=200 if ok else 503)


def make_app(health: Health, metrics: Metrics, hooks: dict[str, Callable[[int], None]] | None = None,
             kill: Callable[[str], bool] | None = None) -> web.Application:
    """The aiohttp application; ``hooks`` ({"pause": f, "resume": f}) and ``kill`` add the /debug routes."""

    async def healthz(_: web.Request) -> web.Response:
        return _json(*health.liveness())

    async def readyz(_: web.Request) -> web.Response:
        return _json(*health.readiness())

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    if hooks is not None:
        def route(action: str, apply: Callable[[int], None]) -> Any:
            async def handler(request: web.Request) -> web.Response:
                try:
                    p = int(request.query["partition"])
                except (KeyError, ValueError):
                    return web.json_response({"error": "?partition=N (an integer) is required"}, status=400)
                apply(p)
                log.warning("test hook: %s transactions partition %d", action, p)
                return web.json_response({action: p, "assigned": sorted(health.assigned())})
            return handler

        for action, apply in hooks.items():
            app.router.add_post(f"/debug/{action}", route(action, apply))
    if kill is not None:
        async def kill_component(request: web.Request) -> web.Response:
            name = request.query.get("component", "")
            if not kill(name):
                return web.json_response({"error": f"no supervised component {name!r}"}, status=404)
            log.warning("test hook: killed component %s", name)
            return web.json_response({"killed": name})

        app.router.add_post("/debug/kill", kill_component)
    return app


class Server:
    """aiohttp on a socket bound beforehand, run inside the running event loop."""

    def __init__(self, sock: socket.socket, app: web.Application) -> None:
        self.sock, self.app = sock, app
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()
        host, port = self.sock.getsockname()[:2]
        log.info("health and metrics on http://%s:%d (/healthz /readyz /metrics)", host, port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
