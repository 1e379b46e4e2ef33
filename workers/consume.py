"""The direct consumer: batches of transactions straight from aiokafka, inside the Faust app.

Faust's per-event stream machinery cost ~30 % of the worker's time (BENCHMARKS.md profile); this
path takes whole fetches with ``getmany`` (the record parsing is aiokafka's C extension) and
hands them to the same ``Runner``. Offsets are committed by us, after the outputs of the flushed
records were acknowledged, per partition up to the last flushed offset — the flushed records of a
partition are always a prefix of what was admitted, in offset order, so nothing past an
unacknowledged output is ever committed. A flush and its commit hold one lock, so commits never
move backwards. After each commit the partitions' ``txlow`` marks are published (only when they
moved): the terminal table's bound rests on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from workers.batch import Record, replay_of
from workers.batching import QUIET_AFTER_S, BatchPolicy
from workers.config import Settings
from workers.runner import InFlight, Runner
from workers.services import publish_lows

log = logging.getLogger("fraudstream.worker")
# Flushed batches whose acknowledgements may be awaited at once: the next batch is fetched, admitted
# and scored meanwhile; beyond this the oldest is waited for (bounded memory, bounded redelivery).
MAX_IN_FLIGHT = 4
QUIET_POLL_MS = 100  # a quiet consumer's loop: ten turns a second


class DirectConsumer:
    def __init__(self, s: Settings, runner: Runner, on_fatal: Callable[[str], None]) -> None:
        self.s, self.runner, self.on_fatal = s, runner, on_fatal
        self.lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None
        self.paused: set[int] = set()  # paused by backpressure (Runner.flow)
        self.held: set[int] = set()    # paused by the test hook (/debug/pause): flow() never resumes these
        self.last_record: dict[int, float] = {}  # partition -> monotonic time its last record (or assignment) came
        self.next_idle_check = 0.0
        self.inflight: deque[InFlight] = deque()  # flushed batches awaiting acknowledgement, oldest first
        self.to_commit: dict[int, int] = {}      # partition -> acknowledged offset not yet committed
        self.commit_due = 0.0
        self.policy = BatchPolicy(s.batch_size, s.max_wait_ms, s.latency_target_ms)
        self.txns = runner.transactions  # exactly-once: commits go through the partitions' transactions
        self.rewinding: set[int] = set()  # paused, their fetched records dropped, until the run loop seeks them
        self.rewind_retry_at = 0.0
        self.busy = False        # the fetch settings in use (``_tune_fetch``)
        self.last_fetch = 0.0    # monotonic time records last came

    def assigned(self) -> set[int]:
        if self.consumer is None:
            return set()
        return {tp.partition for tp in self.consumer.assignment() if tp.topic == self.s.topics.transactions}

    def hold(self, partition: int) -> None:
        """Stop fetching ``partition`` until ``release`` (test hook; a reassignment re-applies it)."""
        self.held.add(partition)
        if self.consumer is not None and partition in self.assigned():
            self.consumer.pause(TopicPartition(self.s.topics.transactions, partition))

    def release(self, partition: int) -> None:
        self.held.discard(partition)
        if self.consumer is not None and partition in self.assigned() and partition not in self.paused:
            self.consumer.resume(TopicPartition(self.s.topics.transactions, partition))

    async def start(self) -> None:
        s = self.s
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap, **s.auth.aiokafka(), group_id=s.group_id, client_id=s.worker_id,
            enable_auto_commit=False, auto_offset_reset=s.auto_offset_reset, max_poll_records=s.batch_size,
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=max(int(s.session_timeout_s * 250), 500),
            **self.policy.fetch_options(busy=False))
        await self.consumer.start()
        self.consumer.subscribe([s.topics.transactions], listener=_Listener(self))

    async def flush_and_commit(self, final: bool = False) -> int:
        """Start a flush, complete the in-flight flushes already acknowledged (all of them when ``final``,
        the oldest when too many are in flight), and commit what they cover when the commit interval has
        passed (or ``final``). Returns how many records were completed."""
        assert self.consumer is not None
        async with self.lock:
            f = await self.runner.flush_start()
            if f is not None:
                self.inflight.append(f)
            done = 0
            due = final or time.monotonic() >= self.commit_due
            # Exactly-once: a commit covers every output sent in the transactions, so all of them complete first.
            everything = final or (due and self.txns is not None)
            while self.inflight and (everything or self.inflight[0].task.done() or len(self.inflight) > MAX_IN_FLIGHT):
                for r in await self.runner.complete(self.inflight.popleft()):
                    self.to_commit[r.partition] = r.offset + 1
                    done += 1
            if self.to_commit and due:
                await self._commit()
            return done

    async def _commit(self) -> None:
        assert self.consumer is not None
        topic = self.s.topics.transactions
        if self.txns is None:
            try:
                await self.consumer.commit({TopicPartition(topic, p): o for p, o in self.to_commit.items()})
            except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError) as exc:
                # The group moved on without us (a session expired while the coordinator or this process was
                # frozen): the consumer rejoins at its next heartbeat, the revocation drops the partitions' state,
                # and whoever owns them re-scores from the last commit (at-least-once: repeats, nothing lost).
                log.warning("offset commit refused, the group is rebalancing (%r): %d partitions will be read "
                            "again from their last commit", exc, len(self.to_commit))
        else:
            result = await self.txns.commit(dict(self.to_commit))
            self._start_rewind(result.rewind)
        self.to_commit.clear()
        self.commit_due = time.monotonic() + self.s.commit_interval_ms / 1000
        # After the commit: a restart re-scores from there, never below these days (decided records
        # still in flight are not committed: they count too).
        uncommitted: dict[int, int] = {}
        for f in self.inflight:
            for p, ts in f.decision.min_ts.items():
                uncommitted[p] = min(uncommitted.get(p, ts), ts)
        await publish_lows(self.runner.publisher, self.s, self.runner.table, self.runner.lows(uncommitted))

    def _start_rewind(self, partitions: set[int]) -> None:
        """Aborted transactions: their partitions' state goes (the next batch rebuilds it), they are paused at
        once, and the run loop seeks them back to the group's committed offset before its next fetch; records
        a fetch in progress still returns for them are dropped until then."""
        if not partitions:
            return
        assert self.consumer is not None
        self.runner.drop_partitions(partitions)
        self.rewinding |= partitions & self.assigned()
        self.consumer.pause(*(TopicPartition(self.s.topics.transactions, p) for p in self.rewinding))

    async def _finish_rewind(self) -> None:
        """Partitions to (re)position: exactly-once, their producers start first (fencing whoever held them
        before); then each is sought to the group's committed offset and resumed. A producer that cannot
        start yet (the broker away) leaves its partition paused until a later turn of the loop."""
        if not self.rewinding or time.monotonic() < self.rewind_retry_at:
            return
        assert self.consumer is not None
        todo = self.rewinding & self.assigned()
        ready = todo if self.txns is None else await self.txns.open(todo)
        tps = [TopicPartition(self.s.topics.transactions, p) for p in sorted(ready)]
        await self.seek_committed(tps)
        self.consumer.resume(*(tp for tp in tps if tp.partition not in self.paused | self.held))
        self.rewinding = todo - ready
        self.rewind_retry_at = time.monotonic() + (self.s.retry_backoff_ms / 1000 if self.rewinding else 0)

    async def seek_committed(self, tps: list[TopicPartition]) -> None:
        """Position each partition at the group's committed offset, asked of the broker (none: where
        --auto-offset-reset says), retrying while the broker cannot answer."""
        assert self.consumer is not None
        backoff = self.s.retry_backoff_ms / 1000
        for tp in tps:
            while True:
                try:
                    offset = await self.consumer.committed(tp)
                    break
                except KafkaError as exc:
                    log.warning("partition %d: committed offset unavailable (%r); retrying in %.1fs", tp.partition,
                                exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
            if offset is not None:
                self.consumer.seek(tp, offset)
            elif self.s.auto_offset_reset == "earliest":
                await self.consumer.seek_to_beginning(tp)
            else:
                await self.consumer.seek_to_end(tp)
            log.info("partition %d: reading from offset %s (the last commit)", tp.partition, offset)

    def next_commit_s(self) -> float | None:
        """Seconds until acknowledged offsets are due to be committed (None: nothing to commit or to await)."""
        if self.inflight:
            return 0.0 if self.inflight[0].task.done() else None
        if not self.to_commit:
            return None
        return max(self.commit_due - time.monotonic(), 0.0)

    async def run(self) -> None:
        """Fetch, admit, flush, commit until asked to stop; then flush what can be and leave the group."""
        assert self.consumer is not None
        try:
            while not self.stopping.is_set():
                await self._finish_rewind()
                assigned = self.assigned()
                self._apply_flow(assigned)
                t0 = time.monotonic()
                records, fetched = await self._fetch()
                if self.rewinding:
                    records = [r for r in records if r.partition not in self.rewinding]
                if records:
                    await self.runner.recover(records)  # I/O: outside the lock that guards flushing
                    async with self.lock:
                        await self.runner.admit(records)
                t1 = time.monotonic()
                await self.flush_and_commit()
                if records:
                    now = time.monotonic()
                    self.policy.observe(len(records), (now - t1) * 1000, (now - t0) * 1000)
                await self.close_idle(assigned, fetched)
            await self.flush_and_commit(final=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.on_fatal("consuming transactions")
            return
        finally:
            if self.stopping.is_set():
                await self.consumer.stop()
                if self.txns is not None:
                    await self.txns.close(list(self.txns.owned))

    def _apply_flow(self, assigned: set[int]) -> None:
        """Per-partition backpressure (``Core.flow``) and the test hook's holds, through pause/resume."""
        assert self.consumer is not None
        topic = self.s.topics.transactions
        paused = self.paused & assigned
        pause, resume = self.runner.flow(paused, 20 * self.s.batch_size)
        pause &= assigned
        resume &= assigned - self.rewinding
        if pause:
            self.consumer.pause(*(TopicPartition(topic, p) for p in pause))
        if resume:
            self.consumer.resume(*(TopicPartition(topic, p) for p in resume - self.held))
        if self.held & assigned:  # also after a reassignment, which forgets pauses
            self.consumer.pause(*(TopicPartition(topic, p) for p in self.held & assigned))
        self.paused = (paused | pause) - resume

    async def _fetch(self) -> tuple[list[Record], set[int]]:
        """One batch under the batch policy (``workers.batching``): the records, and the partitions fetched."""
        assert self.consumer is not None
        policy = self.policy
        cap = policy.max_records()
        records: list[Record] = []
        fetched: set[int] = set()
        # Quiet: getmany still returns as soon as records come; the timeout only paces this loop's housekeeping.
        wait_ms = policy.fetch_wait_ms() if self.busy else QUIET_POLL_MS
        deadline = None
        while True:
            batches = await self.consumer.getmany(timeout_ms=max(int(wait_ms), 0), max_records=cap - len(records))
            now = int(time.time() * 1000)
            records += [Record(r.partition, r.offset, r.timestamp, r.key, r.value, now,
                               replay_of(r.partition, r.headers))
                        for rs in batches.values() for r in rs]
            fetched.update(tp.partition for tp in batches)
            self._tune_fetch(bool(batches))
            if not records or len(records) >= cap or not policy.adaptive or self.stopping.is_set():
                return records, fetched
            if deadline is None:
                deadline = time.monotonic() + policy.fill_wait_ms() / 1000
            wait_ms = (deadline - time.monotonic()) * 1000
            if wait_ms <= 0:
                return records, fetched

    def _tune_fetch(self, got: bool) -> None:
        """Busy or quiet fetch settings (``BatchPolicy.fetch_options``), set on aiokafka's fetcher, which reads
        them for every fetch request it builds (private attributes: left alone if this aiokafka lacks them)."""
        now = time.monotonic()
        if got:
            self.last_fetch = now
        busy = now - self.last_fetch < QUIET_AFTER_S
        fetcher = getattr(self.consumer, "_fetcher", None)
        if busy == self.busy or fetcher is None or not hasattr(fetcher, "_fetch_min_bytes"):
            return
        self.busy = busy
        opts = self.policy.fetch_options(busy)
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = opts["fetch_min_bytes"], opts["fetch_max_wait_ms"]

    async def close_idle(self, assigned: set[int], fetched: set[int]) -> None:
        """Partitions caught up (position at the high watermark) and without a record for --idle-ms
        close their days up to the other partitions' watermark (``Runner.close_idle``), so that an
        empty or quiet partition does not hold back every transaction's terminal finality."""
        assert self.consumer is not None
        now = time.monotonic()
        for p in fetched:
            self.last_record[p] = now
        for p in list(self.last_record):
            if p not in assigned:
                del self.last_record[p]
        # Newly assigned partitions are quiet from now on; paused ones (backpressure, the test hook) are
        # not fetched, so their high watermark is stale: never quiet, and quiet again only --idle-ms
        # after they resume.
        for p in (assigned - set(self.last_record)) | ((self.paused | self.held) & assigned):
            self.last_record[p] = now
        idle_s = self.s.idle_ms / 1000
        if now < self.next_idle_check:
            return
        self.next_idle_check = now + idle_s / 2
        topic = self.s.topics.transactions
        candidates = [TopicPartition(topic, p) for p in assigned if now - self.last_record[p] >= idle_s]
        if not candidates:
            return
        quiet = set()
        try:
            ends = await self.consumer.end_offsets(candidates)  # the broker's, not the last fetch's
            for tp in candidates:
                if tp.partition in self.assigned() and await self.consumer.position(tp) >= ends[tp]:
                    quiet.add(tp.partition)
        except (KafkaError, IllegalStateError) as exc:  # a rebalance in between: look again next time
            log.info("idle check skipped: %r", exc)
            return
        async with self.lock:  # a revocation flushes under this lock: it cannot interleave from here on
            quiet &= self.assigned()
            if quiet:
                await self.runner.close_idle(quiet)

    async def revoke(self, partitions: list[TopicPartition]) -> None:
        """Before partitions move: flush and commit what can be, forget their state and queues."""
        try:
            await self.flush_and_commit(final=True)
        except Exception:  # the commit may fail mid-rebalance; the new owner starts at the last commit
            log.warning("flush before revoking %s failed; the new owner re-scores from the last commit",
                        sorted(tp.partition for tp in partitions), exc_info=True)
        self.runner.drop_partitions({tp.partition for tp in partitions if tp.topic == self.s.topics.transactions})


    async def open_transactions(self, assigned: list[TopicPartition]) -> None:
        """Exactly-once: an assigned partition is paused at once, and read only once its producer has started
        (fencing the previous owner's and ending its open transaction) and it is positioned at the committed
        offset read after that (``_finish_rewind``, in the run loop, before its next fetch)."""
        assert self.consumer is not None and self.txns is not None
        mine = [tp for tp in assigned if tp.topic == self.s.topics.transactions]
        self.consumer.pause(*mine)
        await self.txns.close(self.txns.owned - {tp.partition for tp in mine})
        self.rewinding |= {tp.partition for tp in mine}
        self.rewind_retry_at = 0.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: DirectConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner.revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        owner = self.owner
        if owner.txns is not None:
            await owner.open_transactions(list(assigned))
        log.info("transactions partitions assigned: %s", sorted(tp.partition for tp in assigned))
