"""The worker's side of the model registry (``schemas/registry.py``): take the champion at start when no
``--bundle`` is given, then follow ``model-control`` and swap in each new champion without a restart.

A new champion is fetched (chunk checksums), verified (``load_bundle``: file checksums, the signature
when ``--require-signature``, the feature version) and built beside the running model
(``workers/model.py``: native model, session, warm-up batch, parity of its two graphs), all in a thread
while the running model keeps scoring; then ``Runner.swap`` puts it in between two batches. A version
that fails a check is refused with a log line and ``fraudstream_model_refused_total``, and the running
model keeps serving; it is tried again only when a later control record names it.

Bundles are reassembled under ``<--data-dir>/<worker id>/registry/<version>``; the fetch reads the whole bundles
topic (it holds every published version until compaction drops replaced keys): fine for a registry of
tens of versions, not thousands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from schemas.bundle import Bundle
from schemas.errors import ConfigError, FraudstreamError
from schemas.registry import Control
from schemas.registry_io import Registry
from workers.config import Settings
from workers.errors import step_forever
from workers.metrics import Metrics
from workers.model import Model, build
from workers.runner import Runner

log = logging.getLogger("fraudstream.registry")
T = TypeVar("T")
POLL_MS = 1000


def registry_of(s: Settings) -> Registry:
    return Registry(s.bootstrap, s.auth, s.topics.model_bundles, s.topics.model_control,
                    client_id=f"{s.worker_id}-registry")


def root(s: Settings) -> Path:
    """This worker's own copies (its Faust data directory's): workers sharing a --data-dir on one host must not
    replace a bundle directory under each other while it loads."""
    return s.data_dir / s.worker_id / "registry"


def fetch_verified(s: Settings, reg: Registry, version: str) -> Bundle:
    """The version's bundle, reassembled and verified as ``--bundle`` would be."""
    return reg.fetch_verified(version, root(s), s.bundle_key, s.require_signature)


def registry_bundles(s: Settings) -> tuple[Bundle, Bundle | None]:
    """Start-up without ``--bundle``: the champion named in ``model-control``, verified, and its shadow, so
    that the first transactions are shadowed too (None: none, or refused by a check, ``shadow_or_none``)."""
    reg = registry_of(s)
    try:
        reg.ensure_topics()
        c = reg.control()
        if c.champion is None:
            raise ConfigError(f"no --bundle given and no champion in {reg.control_topic}: publish a bundle and "
                              f"promote it (`python -m trainer publish BUNDLE`, `python -m trainer promote "
                              f"VERSION`), or pass --bundle PATH")
        log.info("registry: champion %s (promoted by %s: %s)", c.champion, c.by or "?", c.reason or "-")
        champion, shadow = fetch_verified(s, reg, c.champion), c.shadow
        if shadow is None:
            return champion, None
        return champion, shadow_or_none(lambda: fetch_verified(s, reg, shadow))
    finally:
        reg.close()


def shadow_or_none(get: Callable[[], T]) -> T | None:
    """A registry shadow that fails a check at start is refused as the follower refuses one (logged), and the
    worker starts without it: a bad shadow never keeps the champion from serving."""
    try:
        return get()
    except FraudstreamError as exc:
        log.error("shadow refused: %s; starting without a shadow", exc)
        return None


class Follower:
    """Follows ``model-control``; swaps the runner's model when the champion changes."""

    def __init__(self, s: Settings, runner: Runner, metrics: Metrics) -> None:
        self.s, self.runner, self.metrics = s, runner, metrics
        self.registry = registry_of(s)
        self.refused: set[tuple[str, int]] = set()  # (version, control record's time) refused
        self.shadow = None if runner.shadow is None else runner.shadow[0].model_version

    async def run(self) -> None:
        try:
            await step_forever(self.step, "registry follower", log)
        finally:
            self.registry.close()

    async def step(self) -> None:
        c = await asyncio.to_thread(self.registry.poll_control, POLL_MS)
        if c is None:
            return
        if self._wanted(c):
            await self.switch(c)
        if c.shadow != self.shadow and (c.shadow, c.at) not in self.refused:
            await self.switch_shadow(c)

    async def switch_shadow(self, c: Control) -> None:
        if c.shadow is None:
            await self.runner.set_shadow(None)
            log.info("shadow %s: off", self.shadow)
            self.shadow = None
            return
        model = await self._prepare_or_refuse(c.shadow, c.at, explain=False)  # a shadow never flags
        if model is not None:
            old = await self.runner.set_shadow((model.bundle, model.scorer))
            self.shadow = model.version
            log.info("shadow %s -> %s: scoring every transaction to %s", old, model.version,
                     self.s.topics.shadow_scores)

    async def _prepare_or_refuse(self, version: str, at: int, explain: bool = True) -> Model | None:
        try:
            return await asyncio.to_thread(self.prepare, version, explain)
        except FraudstreamError as exc:
            self.refused.add((version, at))
            self.metrics.model_refused.inc()
            log.error("model %s refused: %s; %s keeps serving", version, exc, self.runner.model_version)
            return None

    def _wanted(self, c: Control) -> bool:
        return (c.champion is not None and c.champion != self.runner.model_version
                and (c.champion, c.at) not in self.refused)

    async def switch(self, c: Control) -> None:
        assert c.champion is not None
        t0 = time.monotonic()
        model = await self._prepare_or_refuse(c.champion, c.at)
        if model is None:
            return
        old = await self.runner.swap(model.bundle, model.scorer, model.explainer)
        self.metrics.model_swaps.inc()
        self.metrics.set_serving(model.bundle, model.scorer)
        lag = time.time() - c.at / 1000 if c.at else float("nan")
        log.info("model %s -> %s: swapped in %.2fs, %.2fs after its control record (%s)", old, model.version,
                 time.monotonic() - t0, lag, c.reason or "-")

    def prepare(self, version: str, explain: bool = True) -> Model:
        return build(self.s, fetch_verified(self.s, self.registry, version), explain)
