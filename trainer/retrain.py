"""``python -m trainer retrain``: continual retraining from the topics, published as shadow when not worse.

One run:

1. ``--auto-promote N`` only: when model-control's shadow was made shadow by a passing retrain (its
   ``by`` is ``trainer retrain``, its reason starts ``retrain: passed``) more than N days ago (the
   record's ``at``), that shadow is fetched, verified and promoted. Nothing else is checked: the
   model monitor's live metrics of the shadow are not read (not wired).
2. The last ``--days`` days of transactions and labels are read from their topics
   (``trainer.topics_source``: the worker's own admission; what it would dead-letter is skipped and
   counted). The default, 88 days, is what ``trainer train``'s split needs: test 7 + delay 7 +
   train 28 (``TRAIN_DAYS``) + validation 7 days, the features' 37-day look-back before the
   validation week (``WARM_UP_DAYS``: 30-day windows behind the 7-day feedback delay), and a day for
   each partial end (the newest day is still going; the oldest starts at the first transaction).
3. A candidate is trained from them by ``trainer train``'s own code path (``trainer.cli._train``: the
   split, the history check, the fit, the folds, the threshold, the ONNX parity checks, the bundle),
   written under ``--out`` (``<out>/latest`` is left alone: a candidate is not the deployed model).
4. The most recent fully labelled week is the last whole week of UTC days that ends at least the
   feedback delay (7 days) before the newest event's day: its labels are in under the 7-day rule. Its
   transactions (less the cards already known compromised: the trainer's test-set rule,
   ``trainer.pipeline.test_mask``) are scored by the candidate and by the champion of model-control
   (fetched from the registry and verified), both through ONNX Runtime on the same offline features
   (``trainer.export.offline_scores``' computation, on the history and labels read).
5. The candidate passes when it is not worse beyond the tolerances: AP >= champion AP -
   ``--tolerance-ap`` and CP@100 >= champion CP@100 - ``--tolerance-cp``. With no champion yet it
   passes (nothing to compare with; the report says so). A passing candidate is published to the
   registry and made shadow (reason: the metrics); with ``--auto-promote`` a retrain shadow still
   inside its N days is kept (the candidate is published only), else it would never be promoted.
6. ``retrain_report.md`` and ``retrain_report.json`` (both models' metrics on the week, the
   decision and why, the data read) go into the candidate's bundle directory; the decision is printed.

``--every 1d`` repeats this forever, a run per period (the next starts a period after the last
started, at once when it overran); a failed run is logged and the next period tries again; SIGTERM
or SIGINT ends the loop (a run in progress is abandoned: nothing half-published is made shadow).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import TYPE_CHECKING, Any

from schemas.bundle import Bundle, env_key, load_bundle
from schemas.errors import BundleError, ConfigError, FraudstreamError
from schemas.features import FEEDBACK_DELAY_DAYS
from schemas.kafka_auth import KafkaAuth
from schemas.registry import Control
from schemas.settings import add, non_negative_int, positive_int
from trainer.data import WARM_UP_DAYS
from trainer.evaluate import Metrics, Window, prequential_folds
from trainer.fit import TRAIN_DAYS
from trainer.simulate import DAY_MS, History, Labels
from trainer.topics_source import TopicsData, read_topics

if TYPE_CHECKING:
    from schemas.registry_io import Registry

VALID_DAYS = TEST_DAYS = 7  # the split's validation and test weeks (trainer.evaluate)
DEFAULT_DAYS = TEST_DAYS + FEEDBACK_DELAY_DAYS + TRAIN_DAYS + VALID_DAYS + WARM_UP_DAYS + 2  # = 88
RETRAIN_BY = "trainer retrain"
PASSED = "retrain: passed"
REPORT_MD, REPORT_JSON = "retrain_report.md", "retrain_report.json"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _log(msg: str) -> None:
    print(f"[retrain] {msg}", file=sys.stderr, flush=True)


# -- options ---------------------------------------------------------------------------------


class BadValue(argparse.ArgumentTypeError, ValueError):
    """A bad option value: argparse shows its message for a flag, ``schemas.settings.add`` for a variable."""


def duration(text: str) -> float:
    """``--every``: a number and a unit, s, m, h or d (``90s``, ``30m``, ``6h``, ``1d``, ``1.5h``)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m or float(m[1]) <= 0:
        raise BadValue(f"{text!r} is not a duration: a positive number and a unit s, m, h or d (6h, 1d)")
    return float(m[1]) * _UNITS[m[2]]


def finite_float(text: str) -> float:
    x = _float(text)
    if not math.isfinite(x):
        raise BadValue(f"must be a finite number, got {text!r}")
    return x


def positive_float(text: str) -> float:
    x = _float(text)
    if not (math.isfinite(x) and x > 0):
        raise BadValue(f"must be a positive number, got {text!r}")
    return x


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadValue(f"{text!r} is not a number") from None


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from trainer.cli import _bundle_options, _fit_options, _history_options
    from trainer.registry import _common

    p = sub.add_parser("retrain", help="train a candidate from the latest days of the topics, compare it with the "
                       "champion on the latest fully labelled week, publish it as shadow when not worse")
    add(p, "--topic-transactions", "FRAUDSTREAM_TOPIC_TRANSACTIONS", "transactions", "topic: transactions (read)")
    add(p, "--topic-labels", "FRAUDSTREAM_TOPIC_LABELS", "fraud-labels", "topic: labels (read)")
    # ops.configref keys the README's rows by the longest option string: --retrain-days keeps this row apart from
    # simulate's --days (another variable, another meaning); --days is the short form.
    days = SimpleNamespace(add_argument=lambda name, **kw: p.add_argument("--days", name, **kw))
    add(days, "--retrain-days", "FRAUDSTREAM_RETRAIN_DAYS", DEFAULT_DAYS, "days of event time to read from the "
        "topics (also --days; the default is what the training split needs: test, delay, 28-day train and "
        "validation weeks, the features' 37-day look-back, a day for each partial end)", positive_int, dest="days")
    add(p, "--lateness-ms", "FRAUDSTREAM_LATENESS_MS", 600_000, "the workers' allowed lateness: a transaction "
        "they would refuse as late is skipped here too", non_negative_int)
    add(p, "--max-future-ms", "FRAUDSTREAM_MAX_FUTURE_MS", 3_600_000, "the workers' allowed event time ahead "
        "of a record's Kafka timestamp", non_negative_int)
    add(p, "--tolerance-ap", "FRAUDSTREAM_RETRAIN_TOLERANCE_AP", 0.01, "the candidate passes when its AP on the "
        "week is at least the champion's minus this (negative: it must beat the champion by as much)", finite_float)
    add(p, "--tolerance-cp", "FRAUDSTREAM_RETRAIN_TOLERANCE_CP", 0.02, "the same for card precision@100",
        finite_float)
    add(p, "--every", "FRAUDSTREAM_RETRAIN_EVERY", None, "run forever, once per period (6h, 1d ...): a failed run "
        "is logged and retried the next period; SIGTERM ends it", duration)
    add(p, "--auto-promote", "FRAUDSTREAM_RETRAIN_AUTO_PROMOTE", None, "days: at each run, promote the shadow "
        "once a passing retrain made it shadow this long ago (model-control's record; live metrics are not "
        "checked)", positive_float)
    _fit_options(p)
    _history_options(p)
    _bundle_options(p)
    _common(p)


# -- the command -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """One run (``--every`` unset) or the loop; a bad setting or a failed single run is a one-line error, exit 2."""
    if args.every is None:
        outcome = run_once(args)
        print(outcome.line())
        return 0
    return run_every(args.every, lambda: print(run_once(args).line(), flush=True), _log)


class _Stop(BaseException):
    """SIGTERM or SIGINT during a run of the loop."""


def run_every(period_s: float, once: Callable[[], None], log: Callable[[str], None]) -> int:
    """``once()`` every ``period_s`` seconds until SIGTERM or SIGINT; an exception of a run is logged, not raised."""
    stop = threading.Event()
    busy = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if busy[0]:
            busy[0] = False
            raise _Stop

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    n = 0
    try:
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            log(f"run {n} starts")
            try:
                busy[0] = True
                once()
            except FraudstreamError as exc:
                log(f"run {n} failed: {exc}")
            except Exception:
                log(f"run {n} failed:\n{traceback.format_exc()}")
            finally:
                busy[0] = False
            wait = max(0.0, period_s - (time.monotonic() - started))
            if not stop.is_set():
                log(f"next run in {_span(wait)}")
                stop.wait(wait)
    except _Stop:
        log(f"stopped during run {n}: it is abandoned (a published bundle that was not yet made shadow stays "
            f"published only)")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    log("stopped")
    return 0


@dataclass(frozen=True)
class Outcome:
    status: str            # shadow | published | refused
    version: str
    bundle: Path
    why: str

    def line(self) -> str:
        said = {"shadow": "published as shadow", "published": "published (not made shadow)",
                "refused": "not published"}[self.status]
        return f"{said}: {self.version} ({self.bundle}): {self.why}"


def run_once(args: argparse.Namespace) -> Outcome:
    """One run (see the module docstring); a Kafka failure is a ``ConfigError`` naming the broker."""
    from kafka.errors import KafkaError

    try:
        return _run_once(args)
    except KafkaError as exc:
        raise ConfigError(f"Kafka at {args.bootstrap}: {exc!r}") from exc


def _run_once(args: argparse.Namespace) -> Outcome:
    from schemas.registry_io import Registry

    t0 = time.monotonic()
    timing: dict[str, float] = {}
    reg = Registry(args.bootstrap, KafkaAuth.from_env(), args.topic_model_bundles, args.topic_model_control,
                   client_id="fraudstream-retrain")
    try:
        with tempfile.TemporaryDirectory(prefix="fraudstream-champion-") as tmp:
            promoted = _auto_promote(reg, args) if args.auto_promote is not None else None
            champion_version = reg.control().champion  # fetched first: a registry problem fails the run early
            champion = _champion(reg, champion_version, Path(tmp)) if champion_version else None
            data = _read(args)
            timing["read_s"] = data.seconds
            t = time.monotonic()
            candidate = _train_candidate(args, data)
            timing["train_s"] = time.monotonic() - t
            t = time.monotonic()
            ev = evaluate_week(data.history, data.labels, fully_labelled_week(int(data.history.ts.max())), candidate,
                               champion)
            timing["evaluate_s"] = time.monotonic() - t
        passed, why = decide(ev.candidate, ev.champion, args.tolerance_ap, args.tolerance_cp)
        report = _report(args, data, candidate, champion_version, ev, passed, why, promoted)
        t = time.monotonic()
        try:
            status, why = _publish(reg, args, candidate, ev, why) if passed else ("refused", why)
        except BaseException as exc:
            _write_report(candidate.path, {**report, "status": "failed", "why": f"publishing failed: {exc!r}"},
                          timing, t0)
            raise
        timing["publish_s"] = time.monotonic() - t
        _write_report(candidate.path, {**report, "status": status, "why": why}, timing, t0)
        _log(f"report: {candidate.path / REPORT_MD} ({time.monotonic() - t0:.1f}s in all)")
        return Outcome(status, candidate.model_version, candidate.path, why)
    finally:
        reg.close()


def _read(args: argparse.Namespace) -> TopicsData:
    since = int(time.time() * 1000) - (args.days + 1) * DAY_MS
    _log(f"reading {args.topic_transactions} and {args.topic_labels} from {args.bootstrap}: records since "
         f"{_iso(since)}, the last {args.days} days of event time")
    return read_topics(args.bootstrap, KafkaAuth.from_env(), args.topic_transactions, args.topic_labels, since,
                       args.days, lateness_ms=args.lateness_ms, max_future_ms=args.max_future_ms, log=_log)


def _train_candidate(args: argparse.Namespace, data: TopicsData) -> Bundle:
    """``trainer train``'s path, into a staging root under ``--out`` (its ``latest`` link stays there), then
    moved to ``<out>/<version>``."""
    from trainer.cli import _key, _train

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".retrain-", dir=out))
    try:
        facts = {"source": "kafka", **data.to_json()}
        with contextlib.redirect_stdout(sys.stderr):  # _train prints the staging path
            staged = _train(argparse.Namespace(**{**vars(args), "out": staging}), data.history, data.labels, facts)
        final = out / staged.name
        os.replace(staged, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_bundle(final, key=_key(args))


def _champion(reg: Registry, version: str, root: Path) -> Bundle:
    try:
        return reg.fetch_verified(version, root, env_key())
    except BundleError as exc:
        raise BundleError(f"the champion {version} cannot be evaluated: {exc}") from exc


# -- the evaluation week and the decision ----------------------------------------------------


def fully_labelled_week(newest_ts: int) -> Window:
    """The last 7 whole UTC days ending at least the feedback delay before the newest event's day."""
    end = (newest_ts // DAY_MS - FEEDBACK_DELAY_DAYS) * DAY_MS
    return Window(end - TEST_DAYS * DAY_MS, end)


@dataclass(frozen=True)
class WeekResult:
    week: Window
    rows: int              # transactions in the week
    kept: int              # less the cards known compromised (the rows scored)
    frauds: int
    candidate: Metrics
    champion: Metrics | None
    notes: list[str]


def evaluate_week(history: History, labels: Labels, week: Window, candidate: Bundle,
                  champion: Bundle | None) -> WeekResult:
    """Both models' metrics on the week's rows (the trainer's test-set rule), from the same offline features."""
    from trainer.export import onnx_scores
    from trainer.pipeline import Dataset, test_mask

    if week.start_ms < int(history.ts.min()):
        raise ConfigError(f"the evaluation week {week.label()} starts before the history read "
                          f"({_iso(int(history.ts.min()))}): read more --days")
    ds = Dataset.build(history, labels)  # what offline_scores computes, once for both models
    split = prequential_folds(week.start_ms, 1, train_days=TRAIN_DAYS, test_days=TEST_DAYS)[0]
    mask = test_mask(ds, split)
    x = ds.x[mask]

    def metrics(b: Bundle) -> Metrics:
        return ds.metrics(mask, onnx_scores(b.onnx_path, x).astype("float64"))

    notes = [f"{name} {b.model_version} was fitted or tuned on {', '.join(seen)}: its metrics on the week are "
             f"optimistic" for name, b in (("candidate", candidate), ("champion", champion))
             if b is not None and (seen := _saw(b, week))]
    return WeekResult(week, int(week.contains(history.ts).sum()), int(mask.sum()), int(history.is_fraud[mask].sum()),
                      metrics(candidate), metrics(champion) if champion is not None else None, notes)


def _saw(b: Bundle, week: Window) -> list[str]:
    """The windows of a bundle's split that it was fitted or early-stopped on and that overlap ``week``."""
    windows = b.manifest.get("data_window", {})
    out = []
    for name in ("train", "validation"):
        w = windows.get(name)
        if isinstance(w, dict) and w.get("start_ms", 0) < week.end_ms and week.start_ms < w.get("end_ms", 0):
            out.append(f"its {name} window {w.get('label', '')}")
    return out


def decide(cand: Metrics, champ: Metrics | None, tol_ap: float, tol_cp: float) -> tuple[bool, str]:
    """Whether the candidate is not worse than the champion beyond the tolerances, and why."""
    if champ is None:
        return True, (f"no champion in model-control yet, nothing to compare with (candidate AP {cand.ap:.4f}, "
                      f"CP@100 {cand.cp100:.4f})")
    if not all(math.isfinite(v) for v in (cand.ap, champ.ap, cand.cp100, champ.cp100)):
        return False, "the evaluation week has no fraud (or no rows): AP and CP@100 cannot compare the models"
    said = (f"AP {cand.ap:.4f} vs champion {champ.ap:.4f} (tolerance {tol_ap:g}), CP@100 {cand.cp100:.4f} vs "
            f"{champ.cp100:.4f} (tolerance {tol_cp:g})")
    worse = []
    if cand.ap < champ.ap - tol_ap:
        worse.append(f"AP {cand.ap - champ.ap:+.4f}")
    if cand.cp100 < champ.cp100 - tol_cp:
        worse.append(f"CP@100 {cand.cp100 - champ.cp100:+.4f}")
    if worse:
        return False, f"worse than the champion beyond the tolerance ({', '.join(worse)}): {said}"
    return True, f"not worse than the champion: {said}"


# -- publishing and promoting ----------------------------------------------------------------


def _retrain_shadow(c: Control) -> bool:
    """model-control's shadow was made shadow by a passing retrain (its latest record says so)."""
    return bool(c.shadow) and c.by == RETRAIN_BY and c.reason.startswith(PASSED)


def _publish(reg: Any, args: argparse.Namespace, candidate: Bundle, ev: WeekResult, why: str) -> tuple[str, str]:
    _, written = reg.publish(candidate)
    _log(f"{'published' if written else 'already published'}: {candidate.model_version} to {reg.bundles_topic}")
    c, now = reg.control(), int(time.time() * 1000)
    if args.auto_promote is not None and _retrain_shadow(c) and now - c.at < args.auto_promote * DAY_MS:
        until = _iso(c.at + int(args.auto_promote * DAY_MS))
        return "published", (f"{why}; published only: the shadow {c.shadow} is in its {args.auto_promote:g}-day "
                             f"shadow period until {until} (--auto-promote)")
    reason = f"{PASSED} on {ev.week.label()} ({ev.kept} transactions, {ev.frauds} frauds): {why}"
    reg.write_control(c.with_shadow(candidate.model_version, now, RETRAIN_BY, reason))
    _log(f"model-control: champion {c.champion or '-'}, shadow {candidate.model_version}")
    return "shadow", why


def _auto_promote(reg: Any, args: argparse.Namespace) -> dict[str, Any]:
    c, now = reg.control(), int(time.time() * 1000)
    days = args.auto_promote
    if not c.shadow:
        out = {"promoted": None, "why": "no shadow in model-control"}
    elif not _retrain_shadow(c):
        out = {"promoted": None, "why": f"the shadow {c.shadow} was not made shadow by a passing retrain "
                                        f"(model-control's latest change: by {c.by!r}, {c.reason!r})"}
    elif now - c.at < days * DAY_MS:
        out = {"promoted": None, "why": f"the shadow {c.shadow} has been shadow {(now - c.at) / DAY_MS:.2f} of "
                                        f"{days:g} days"}
    else:
        try:
            reg.verify(c.shadow, env_key())  # as `trainer promote` checks it
        except BundleError as exc:
            out = {"promoted": None, "why": f"the shadow {c.shadow} is not promoted: it does not verify ({exc})"}
        else:
            reason = (f"retrain --auto-promote {days:g}: shadow since {_iso(c.at)} ({(now - c.at) / DAY_MS:.2f} "
                      f"days), its check then: {c.reason}")
            reg.write_control(c.promote(c.shadow, now, RETRAIN_BY, reason))
            out = {"promoted": c.shadow, "previous_champion": c.champion, "why": reason}
    _log(f"auto-promote: {out['why'] if out['promoted'] is None else 'promoted ' + str(out['promoted'])}")
    return out


# -- the report ------------------------------------------------------------------------------


def _metrics_json(m: Metrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in {"ap": m.ap, "cp100": m.cp100, "auc": m.auc, "n": m.n, "n_fraud": m.n_fraud}.items()}


def _report(args: argparse.Namespace, data: TopicsData, candidate: Bundle, champion: str | None, ev: WeekResult,
            passed: bool, why: str, promoted: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "passed": passed,
        "rule": {"tolerance_ap": args.tolerance_ap, "tolerance_cp100": args.tolerance_cp,
                 "passes_when": "candidate AP >= champion AP - tolerance_ap and candidate CP@100 >= champion CP@100 "
                                "- tolerance_cp100 (no champion: passes)"},
        "week": {"start_ms": ev.week.start_ms, "end_ms": ev.week.end_ms, "label": ev.week.label(),
                 "transactions": ev.rows, "scored": ev.kept, "frauds": ev.frauds,
                 "rows": "the week's transactions less the cards already known compromised (trainer.pipeline."
                         "test_mask)"},
        "candidate": {"version": candidate.model_version, "bundle": str(candidate.path),
                      "metrics": _metrics_json(ev.candidate)},
        "champion": None if champion is None else {"version": champion, "metrics": _metrics_json(ev.champion)},
        "notes": ev.notes,
        "auto_promote": promoted,
        "data": data.to_json(),
        "registry": {"bootstrap": args.bootstrap, "bundles": args.topic_model_bundles,
                     "control": args.topic_model_control},
    }


def _write_report(directory: Path, report: dict[str, Any], timing: dict[str, float], t0: float) -> None:
    report = {**report, "timing": {**{k: round(v, 2) for k, v in timing.items()},
                                   "total_s": round(time.monotonic() - t0, 2)}}
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (directory / REPORT_MD).write_text(_markdown(report), encoding="utf-8")


def _markdown(r: dict[str, Any]) -> str:
    said = {"shadow": "published as shadow", "published": "published, not made shadow", "refused": "not published",
            "failed": "failed while publishing"}[r["status"]]
    w, data = r["week"], r["data"]

    def num(x: Any) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    lines = [f"# Retrain report: {r['candidate']['version']}", "", f"**Decision: {said}.** {r['why']}", "",
             f"## Evaluation week {w['label']}", "",
             f"{w['transactions']} transactions, {w['scored']} scored after removing the cards already known "
             f"compromised (the trainer's test-set rule), {w['frauds']} frauds. The week ends a feedback delay "
             f"(7 days) before the newest event's day, so its labels are in.", "",
             "| model | version | AP | CP@100 | AUC |", "|---|---|---|---|---|"]
    for name in ("candidate", "champion"):
        m = r[name]
        if m is None:
            lines.append(f"| {name} | none | | | |")
        else:
            mm = m["metrics"] or {}
            lines.append(f"| {name} | {m['version']} | {num(mm.get('ap'))} | {num(mm.get('cp100'))} | "
                         f"{num(mm.get('auc'))} |")
    rule = r["rule"]
    lines += ["", f"Rule: the candidate passes when AP >= champion AP - {rule['tolerance_ap']:g} and CP@100 >= "
              f"champion CP@100 - {rule['tolerance_cp100']:g}; with no champion it passes.", ""]
    lines += [f"- note: {n}" for n in r["notes"]]
    if r.get("auto_promote"):
        lines += [f"- auto-promote: {r['auto_promote']['why']}"]
    h = data["history"]
    lines += ["", "## Data read", "",
              f"Records with Kafka timestamps since {data['read_since']}; event-time window {data['window']['start']} "
              f"to {data['window']['end']}; history {h['transactions']} transactions ({h['frauds']} frauds) from "
              f"{h['first_ts']} to {h['last_ts']}, {h['labels']} labels reported {h['first_reported_at']} to "
              f"{h['last_reported_at']}; read in {data['seconds']:.1f}s.", "",
              "| topic | records | used | skipped | outside the window | skipped by reason |",
              "|---|---|---|---|---|---|"]
    for t in data["topics"].values():
        why = ", ".join(f"{k}: {v}" for k, v in t["skipped"].items()) or "-"
        lines.append(f"| {t['topic']} | {t['records']} | {t['accepted']} | {t['skipped_total']} | "
                     f"{t['outside_window']} | {why} |")
    timing = ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in r["timing"].items())
    lines += ["", f"Timing: {timing}.", ""]
    return "\n".join(lines)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 3 * 3600 else f"{seconds / 3600:.1f}h"


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
