"""The worker's core, sans I/O: batches of raw records in, typed decisions out.

No asyncio and no Kafka here. ``Core.admit`` takes a batch of ``Record``s (bytes, key, partition,
offset, timestamps, re-drive origin) into partition state and queues them per partition; it
returns the day closures to publish. ``Core.decide`` takes, per partition, the queue prefix whose
features are final (or whose wait ran out) and returns a ``Decision``: the feature matrix of the
transactions to score, the records to dead-letter with their reasons, and the offsets that become
safe to commit once the decision's outputs are acknowledged. ``Core.outputs`` turns a decision
and its scores into the output records. The edge (``workers.runner``, ``workers.consume``) does
the I/O: it recovers partition state before admission, calls the scorer, publishes, commits.

Per partition, the decided records are always a prefix of what was admitted, in offset order, so
a commit never passes a record whose outputs are not acknowledged.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from schemas.features import DAY_MS
from schemas.validate import Reject
from workers.batch import (
    Admitted,
    Record,
    admit_batch,
    dead_letter_headers,
    feature_rows,
    flag_messages,
    needed_day,
    score_messages,
)
from workers.config import Settings, Topics
from workers.explain import Explainer
from workers.ports import Out
from workers.state import Partial, TxPartition
from workers.terminals import TerminalTable

log = logging.getLogger("fraudstream.worker")
F32 = npt.NDArray[np.float32]
Closure = tuple[int, list[Partial], int | None]  # (partition, closed day counts, closed through)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """What the core needs of the settings and the bundle, nothing else."""

    lateness_ms: int
    max_future_ms: int
    terminal_wait_s: float
    threshold: float
    model_version: str
    worker_id: str
    topics: Topics
    scores_enabled: bool = True

    @classmethod
    def of(cls, s: Settings, threshold: float, model_version: str) -> CoreConfig:
        return cls(s.lateness_ms, s.max_future_ms, s.terminal_wait_s, threshold, model_version, s.worker_id,
                   s.topics, s.scores_enabled)


@dataclass(slots=True)
class Pending:
    record: Record
    admitted: Admitted | None
    reject: Reject | None
    since: float               # monotonic time it was queued


@dataclass(slots=True)
class Decision:
    """What to do with a decided prefix of the queues."""

    ready: list[Admitted]                        # to score, in the rows' order
    rows: F32                                    # their feature matrix (float32, the bundle's order)
    dead: list[tuple[Record, Reject]]            # to dead-letter, with the reason
    records: list[Record]                        # every decided record, offset order per partition
    commits: dict[int, int] = field(default_factory=dict)   # partition -> offset to commit once acknowledged
    min_ts: dict[int, int] = field(default_factory=dict)    # partition -> oldest event time decided

    def fail_scoring(self, detail: str) -> None:
        """Scoring failed for good: the transactions go to the dead-letter topic instead."""
        self.dead += [(a.record, Reject("scoring_failed", detail)) for a in self.ready]
        self.ready, self.rows = [], np.zeros((0, self.rows.shape[1]), np.float32)


@dataclass(slots=True)
class Outputs:
    records: list[Out]
    sources: list[int]     # per record, the transactions partition it comes from (exactly-once: its transaction)
    scored: int            # the first ``scored`` records are scores and flags
    flagged: int
    unexplained: int = 0   # flags sent without reason codes (beyond the explainer's budget, or it failed)


class Core:
    def __init__(self, cfg: CoreConfig, table: TerminalTable, explainer: Explainer | None = None) -> None:
        self.cfg, self.table = cfg, table
        self.explainer = explainer  # None: flags are the score messages, with no explanation
        self.unexplained = 0  # flags sent without reason codes although the core has an explainer
        self.states: dict[int, TxPartition] = {}
        self.pending: dict[int, deque[Pending]] = {}

    # -- recovery and partitions ----------------------------------------------------------------

    def recovery_needed(self, records: Sequence[Record]) -> dict[int, int]:
        """Partitions whose state does not continue exactly where the batch starts: partition -> the
        batch's first offset there (the edge rebuilds them, then ``install``)."""
        first: dict[int, int] = {}
        for r in records:
            first.setdefault(r.partition, r.offset)
        return {p: o for p, o in first.items()
                if (st := self.states.get(p)) is None or st.next_offset != o}

    def install(self, partition: int, state: TxPartition) -> None:
        """A rebuilt partition state; anything queued from before is redelivered from its offset on."""
        self.states[partition] = state
        self.pending.pop(partition, None)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.states.pop(p, None)
            self.pending.pop(p, None)

    # -- admission and decision ------------------------------------------------------------------

    def admit(self, records: Sequence[Record], now: float) -> list[Closure]:
        """Queue a batch (its partitions' state must continue at it: ``recovery_needed`` is empty)."""
        adm = admit_batch(list(records), self.states, self.cfg.max_future_ms)
        for r, o in zip(records, adm.outcomes, strict=True):
            q = self.pending.get(r.partition)
            if q is None:
                q = self.pending[r.partition] = deque()
            q.append(Pending(r, o, None, now) if isinstance(o, Admitted) else Pending(r, None, o, now))
        return [(p, [partial for q, partial in adm.closures if q == p], self.states[p].closed_through)
                for p in sorted({r.partition for r in records})]

    def decide(self, now: float) -> Decision | None:
        """Per partition, the queue prefix that can be decided now, with its feature rows."""
        items = self._decidable(now)
        if not items:
            return None
        ready = [i.admitted for i in items if i.admitted is not None]
        dead = [(i.record, i.reject) for i in items if i.reject is not None]
        d = Decision(ready, feature_rows(ready, self.states, self.table), dead, [i.record for i in items])
        for i in items:
            d.commits[i.record.partition] = i.record.offset + 1
        for a in ready:
            p = a.record.partition
            d.min_ts[p] = min(d.min_ts.get(p, a.tx.ts), a.tx.ts)
        self._forget_old(set(d.commits))
        return d

    def _decidable(self, now: float) -> list[Pending]:
        final = self.table.ready_through()
        deadline = now - self.cfg.terminal_wait_s
        out: list[Pending] = []
        for q in self.pending.values():
            while q:
                item = q[0]
                if item.admitted is not None and not (final is not None and needed_day(item.admitted.tx) <= final):
                    if item.since > deadline:
                        break
                    self._give_up(item, final)
                out.append(q.popleft())
        return out

    def _give_up(self, item: Pending, final: int | None) -> None:
        assert item.admitted is not None
        day = needed_day(item.admitted.tx)
        item.reject = Reject("terminal_state_not_final",
                             f"terminal buckets for day {day} were not final within {self.cfg.terminal_wait_s:.0f}s "
                             f"(ready through {final})")
        item.admitted = None
        log.warning("%s: transactions closed %s, labels closed %s", item.reject.detail, self.table.tx_wm,
                    self.table.label_wm)

    def outputs(self, d: Decision, scores: F32, scored_at: int) -> Outputs:
        """Scores and flags (keyed by tx_id), then dead letters (the source record with reason headers)."""
        c, t = self.cfg, self.cfg.topics
        values = score_messages(d.ready, scores, c.threshold, c.model_version, c.worker_id, scored_at)
        flags = scores >= c.threshold
        before = self.unexplained
        flag_values = iter(self._flag_values(d, scores, flags, values, scored_at))
        out: list[Out] = []
        sources: list[int] = []
        for a, value, flag in zip(d.ready, values, flags.tolist(), strict=True):
            key = a.tx.tx_id.encode()
            if c.scores_enabled:
                out.append((t.scores, key, value, None))
                sources.append(a.record.partition)
            if flag:
                out.append((t.flags, key, next(flag_values), None))
                sources.append(a.record.partition)
        scored = len(out)
        for rec, reject in d.dead:
            out.append((t.dlq, rec.key, rec.value or b"",
                        dead_letter_headers(rec.partition, rec.offset, reject, t.transactions, c.worker_id)))
            sources.append(rec.partition)
        return Outputs(out, sources, scored, int(flags.sum()), self.unexplained - before)

    def _flag_values(self, d: Decision, scores: F32, flags: npt.NDArray[np.bool_], values: list[bytes],
                     scored_at: int) -> list[bytes]:
        """The flag messages, in row order: with their explanations when the core has an explainer (on the
        flagged rows only: a batch without flags explains nothing), else the score messages themselves."""
        rows = np.flatnonzero(flags)
        if self.explainer is None or len(rows) == 0:
            return [values[i] for i in rows.tolist()]
        n = self.explainer.budget.take(len(d.ready), len(rows))
        # Over the budget: the highest-scored flags are explained (stable: ties keep row order).
        chosen = rows if n == len(rows) else np.sort(rows[np.argsort(-scores[rows], kind="stable")[:n]])
        out = {i: values[i] for i in rows.tolist()}
        self.unexplained += len(rows) - len(chosen)
        try:
            explanations = self.explainer.explain(d.rows[chosen])
        except Exception:  # a flag is never held back for want of its reasons (the schema allows none)
            log.exception("explaining %d flags failed: they go out without reason codes", len(chosen))
            self.unexplained += len(chosen)
            return list(out.values())
        c = self.cfg
        explained = flag_messages([d.ready[i] for i in chosen.tolist()], scores[chosen], explanations, c.threshold,
                                  c.model_version, c.worker_id, scored_at)
        out.update(zip(chosen.tolist(), explained, strict=True))
        return list(out.values())

    # -- idle partitions -------------------------------------------------------------------------

    def close_idle(self, partitions: Iterable[int]) -> list[Closure]:
        """Close days on quiet, caught-up partitions through the oldest watermark of the *other*
        transactions partitions (a partition without traffic would otherwise hold back everyone's
        finality); a transaction that later arrives for a day closed this way is dead-lettered as late."""
        closures: list[Closure] = []
        for p in sorted(partitions):
            # The others that have a watermark: several quiet partitions must not wait for each other.
            others = [wm for q, wm in self.table.tx_wm.items() if q != p]
            if not others:
                continue
            state = self.states.get(p)
            if state is None:  # nothing consumed since the assignment: the first batch rebuilds it anyway
                state = self.states[p] = TxPartition(p, self.cfg.lateness_ms)
            before = state.closed_through
            partials = state.close_days(idle_through=min(others))
            if state.closed_through != before:
                closures.append((p, partials, state.closed_through))
        return closures

    # -- queues, flow and clocks -----------------------------------------------------------------

    def pending_count(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def waiting(self, partition: int, now: float) -> bool:
        """Whether the partition's next record waits for terminal finality, still within the wait bound."""
        q = self.pending.get(partition)
        if not q or q[0].admitted is None:
            return False
        final = self.table.ready_through()
        blocked = final is None or needed_day(q[0].admitted.tx) > final
        return blocked and now - q[0].since < self.cfg.terminal_wait_s

    def flow(self, paused: set[int], limit: int) -> tuple[set[int], set[int]]:
        """Backpressure per partition: (to pause, to resume). A partition whose queue passed ``limit``
        stops fetching until it is below half; the others keep fetching, because a queue usually
        waits for *another* partition's watermark, and a global stop would starve exactly that one."""
        sizes = {p: len(q) for p, q in self.pending.items()}
        pause = {p for p, n in sizes.items() if n > limit and p not in paused}
        resume = {p for p in paused if sizes.get(p, 0) <= limit // 2}
        return pause, resume

    def next_wait_s(self, now: float) -> float | None:
        """Seconds until the first queued transaction's wait bound runs out; None when nothing waits."""
        heads = [q[0].since for q in self.pending.values() if q]
        if not heads:
            return None
        return max(min(heads) + self.cfg.terminal_wait_s - now, 0.0)

    def stream_clock(self) -> int | None:
        """The stream's event-time clock as this worker knows it: its partitions' newest event time less the
        lateness, or the start of the day after the last one every partition closed (None: unknown)."""
        mine = [st.max_ts - st.lateness_ms for st in self.states.values() if st.max_ts >= 0]
        final = self.table.tx_final_through()
        known = mine + ([(final + 1) * DAY_MS] if final is not None else [])
        return max(known) if known else None

    def pending_min_ts(self, p: int) -> int | None:
        """A lower bound of the event times queued on partition ``p``: a queued transaction's successors
        are at most the lateness older than the first."""
        first = next((i.admitted.tx.ts for i in self.pending.get(p, ()) if i.admitted is not None), None)
        return None if first is None else first - self.cfg.lateness_ms

    def _forget_old(self, partitions: set[int]) -> None:
        for p in partitions:
            state = self.states.get(p)
            if state is not None:
                state.forget_old(self.pending_min_ts(p))

    def lows(self, uncommitted_min_ts: dict[int, int] | None = None) -> dict[int, int]:
        """Per partition, the oldest day a restart from its last commit may score (``TxPartition.low_day``),
        counting decided records whose commit is still to come (``uncommitted_min_ts``)."""
        out: dict[int, int] = {}
        extra = uncommitted_min_ts or {}
        for p, state in self.states.items():
            bounds = [b for b in (self.pending_min_ts(p), extra.get(p)) if b is not None]
            low = state.low_day(min(bounds) if bounds else None)
            if low is not None:
                out[p] = low
        return out

    def state_sizes(self) -> dict[str, int]:
        """Entries in every per-key structure of the core (exported as metrics and in the stats topic)."""
        sizes: dict[str, int] = {"pending": self.pending_count(), **self.table.sizes()}
        for state in self.states.values():
            for k, v in state.sizes().items():
                sizes[k] = sizes.get(k, 0) + v
        return sizes
