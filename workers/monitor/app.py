"""The monitor's lifecycle: a Faust app runs it (services, signals, the stop), plain aiokafka does the work.

Start: the producer, then the lease (lease.py). Holding the lease, the instance runs an ``Active``
(active.py) until the lease moves or the monitor stops; without it, it stands by. The lease poller
is supervised (``workers.health.Supervisor``) and an activation that ends by itself is a death too:
either makes the monitor not live and not ready, and it exits 1 after a moment (never a silent
freeze). A stop (SIGTERM, SIGINT) leaves the group, so a standby takes over at once.

HTTP (``--metrics-port``): ``/healthz`` 200 unless a component died; ``/readyz`` 200 when standing by
or active and caught up, 503 while starting, rebuilding, or after a death (the JSON body says which);
``/metrics`` (metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

import faust
from aiohttp import web

from workers.errors import ComponentDied
from workers.health import Server, Supervisor
from workers.metrics import CONTENT_TYPE
from workers.monitor.active import Active
from workers.monitor.bundles import Calibrations
from workers.monitor.config import MonitorSettings
from workers.monitor.lease import Lease
from workers.monitor.metrics import MonitorMetrics
from workers.monitor.output import Output

log = logging.getLogger("fraudstream.monitor")
FATAL_GRACE_S = 2.0


class Monitor:
    def __init__(self, s: MonitorSettings, partitions: dict[str, int], metrics_socket: socket.socket | None) -> None:
        self.s, self.partitions = s, partitions
        self.output = Output(s)
        self.metrics = MonitorMetrics()
        self.metrics.ready = lambda: self.readiness()[0]
        self.calibrations = Calibrations(s.bundles, s.bundle_key)
        self.metrics.training = self.calibrations.found.get  # loaded by the windows, never at scrape time
        self.lease = Lease(s, self.activate, self.deactivate)
        self.supervisor = Supervisor(self.component_died)
        self.active: Active | None = None
        self.active_task: asyncio.Future[None] | None = None
        self.started = False
        self.fatal: str | None = None
        self.server = Server(metrics_socket, http_app(self)) if metrics_socket is not None else None

    async def start(self) -> None:
        try:
            await self.output.start()
            await self.lease.start()
            self.supervisor.watch("lease", self.lease.task)
            self.started = True
            log.info("monitor %s started: group %s, horizon %d days, lateness %d ms", self.s.monitor_id,
                     self.s.group_id, self.s.horizon_days, self.s.lateness_ms)
        except Exception as exc:  # a Faust task that raises is only logged: a failed start must stop the monitor
            self.component_died("start-up", exc)

    async def activate(self) -> None:
        self.active = Active(self.s, self.partitions, self.output, self.metrics, self.calibrations)
        self.active_task = asyncio.ensure_future(self.active.run())
        self.active_task.add_done_callback(self._active_ended)

    async def deactivate(self) -> None:
        task, self.active_task, self.active = self.active_task, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _active_ended(self, task: asyncio.Future[None]) -> None:
        if task is self.active_task and not self.supervisor.stopping:
            self.component_died("active monitor", None if task.cancelled() else task.exception())

    async def serve_health(self) -> None:
        if self.server is not None:
            await self.server.start()

    async def stop(self, sender: Any = None, **kwargs: Any) -> None:
        self.supervisor.stop()
        await self.lease.stop()  # deactivates first, then leaves the group
        await self.output.stop()
        if self.server is not None:
            await self.server.stop()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        if self.fatal is not None:
            return False, {"status": "fatal", "reason": self.fatal}
        return True, {"status": "ok"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.fatal is not None:
            return False, {"ready": False, "reason": f"fatal error {self.fatal}"}
        if not self.started:
            return False, {"ready": False, "reason": "starting"}
        if self.active is None:
            return True, {"ready": True, "role": "standby"}
        if not self.active.rebuilt.is_set():
            return False, {"ready": False, "role": "active", "reason": "rebuilding the state from the sources"}
        return True, {"ready": True, "role": "active", "clock": self.active.core.done}

    def component_died(self, name: str, exc: BaseException | None) -> None:
        if self.fatal is not None:
            return
        err = ComponentDied(name, exc)
        log.error("%s; stopping the monitor", err, exc_info=exc)
        self.fatal = str(err)
        self.supervisor.stopping = True
        loop = asyncio.get_running_loop()
        loop.call_later(FATAL_GRACE_S, os.kill, os.getpid(), signal.SIGINT)  # probes see why first
        loop.call_later(FATAL_GRACE_S + 30, os._exit, 1)


def http_app(m: Monitor) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        ok, body = m.liveness()
        return web.json_response(body, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, body = m.readiness()
        return web.json_response(body, status=200 if ok else 503)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=m.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app


def create_app(s: MonitorSettings, partitions: dict[str, int], metrics_socket: socket.socket | None) -> faust.App:
    (s.data_dir / s.monitor_id).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{s.group_id}-app",  # the lease's group is s.group_id, joined by the lease consumer
        broker=";".join(f"kafka://{b}" for b in s.bootstrap.split(",")),
        broker_credentials=s.auth.faust(), value_serializer="raw", key_serializer="raw", web_enabled=False,
        datadir=str(s.data_dir / s.monitor_id), topic_allow_declare=False, producer_acks=-1,
        # Its group holds no partition, but a restarted instance waits for its dead predecessor to leave it.
        broker_session_timeout=s.session_timeout_s, broker_heartbeat_interval=max(s.session_timeout_s / 4, 0.5))
    m = Monitor(s, partitions, metrics_socket)
    app.task(m.start)
    app.task(m.serve_health)
    app.on_before_shutdown.connect(m.stop)  # type: ignore[arg-type]
    app.conf.fraudstream = {"monitor": m}
    return app
