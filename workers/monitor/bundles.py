"""Each model version's calibration and training figures, from its bundle:
``<bundles>/<model_version>/model.json``, as the trainer writes them (``load_bundle`` verifies it;
``monitoring``, schemas/drift.py).

A version whose bundle is missing, refused or without a monitoring block has no estimated
precision (null). A missing one is looked for again every ``retry_s`` (a bundle deployed after the
monitor started); a found one is kept for good (a version's bundle never changes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from schemas.bundle import load_bundle
from schemas.drift import Calibration, Monitoring
from schemas.errors import BundleError

log = logging.getLogger("fraudstream.monitor")
RETRY_S = 60.0


class Calibrations:
    def __init__(self, root: Path, key: bytes | None = None, retry_s: float = RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.key, self.retry_s, self.clock = root, key, retry_s, clock
        self.found: dict[str, Monitoring] = {}
        self.missing: dict[str, float] = {}  # version -> when it was last looked for

    def __call__(self, version: str) -> Calibration | None:
        m = self.monitoring(version)
        return None if m is None else m.calibration

    def monitoring(self, version: str) -> Monitoring | None:
        """The version's monitoring block (its calibration, the training figures); None without one."""
        if version in self.found:
            return self.found[version]
        last = self.missing.get(version)
        if last is not None and self.clock() - last < self.retry_s:
            return None
        m = self._load(version, warn=last is None)
        if m is None:
            self.missing[version] = self.clock()
        else:
            self.found[version] = m
            self.missing.pop(version, None)
        return m

    def _load(self, version: str, warn: bool) -> Monitoring | None:
        if "/" in version or version in (".", ".."):  # a version names a directory, never a path
            return None
        path = self.root / version
        try:
            monitoring = load_bundle(path, key=self.key).monitoring
        except BundleError as exc:
            if warn:
                log.warning("model version %s: no estimated precision (%s)", version, exc)
            return None
        if monitoring is None and warn:
            log.warning("model version %s: bundle %s has no monitoring block: no estimated precision", version, path)
        return monitoring
