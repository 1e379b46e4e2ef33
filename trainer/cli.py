"""``python -m trainer {simulate,train,evaluate,export,run,score}`` — every option has an env variable.

- ``simulate``: write the handbook simulator's history to Parquet.
- ``train``: fit, evaluate and write a model bundle from Parquet files (or a fresh simulation).
- ``evaluate``: the handbook protocol over several simulator seeds: mean and std, no bundle.
- ``export``: re-export a bundle's native model to ONNX (both graphs), re-check parity, re-seal the bundle.
- ``run``: simulate, then train (the book's defaults; ``--quick`` for a small, fast version).
- ``score``: score a Parquet history with a bundle, offline, into a scores Parquet file (trainer/score.py).
- ``retrain``: a candidate from the topics, published as shadow when not worse than the champion (trainer/retrain.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from schemas.errors import FraudstreamError
from schemas.settings import add, flag, positive_int
from trainer.fit import TRAIN_DAYS, FitParams
from trainer.simulate import SimConfig

QUICK = SimConfig(customers=1000, terminals=2000, days=84, seed=0)
SCORE_CHUNK_ROWS = 100_000  # score: rows per ONNX Runtime call and Parquet row group


def _log(msg: str) -> None:
    print(f"[trainer] {msg}", file=sys.stderr, flush=True)


def _sim_options(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    add(p, "--customers", "FRAUDSTREAM_SIM_CUSTOMERS", d.customers, "simulated customers", positive_int)
    add(p, "--terminals", "FRAUDSTREAM_SIM_TERMINALS", d.terminals, "simulated terminals", positive_int)
    add(p, "--days", "FRAUDSTREAM_SIM_DAYS", d.days, "simulated days", positive_int)
    add(p, "--start", "FRAUDSTREAM_SIM_START", d.start, "first simulated day (UTC date)")
    add(p, "--seed", "FRAUDSTREAM_SIM_SEED", d.seed, "simulator seed", int)
    add(p, "--label-delay-days", "FRAUDSTREAM_LABEL_DELAY_DAYS", None,
        "report every simulated label this many days after its transaction (default: realistic delays, "
        "85 %% within 1-7 days, a tail of chargebacks up to 60 days)", positive_int)
    p.add_argument("--quick", action="store_true",
                   help=f"small and fast: {QUICK.customers} customers, {QUICK.terminals} terminals, {QUICK.days} days")


def _fit_options(p: argparse.ArgumentParser) -> None:
    d = FitParams()
    helps = {
        "rounds": "maximum boosting rounds", "learning_rate": "learning rate", "num_leaves": "leaves per tree",
        "max_depth": "maximum tree depth (bounded for the tensorized GPU graph)",
        "min_child_samples": "minimum rows per leaf", "feature_fraction": "features sampled per tree",
        "bagging_fraction": "rows sampled per tree", "lambda_l2": "L2 regularisation",
        "class_weight": "fraud class weight: none | sqrt (sqrt of neg/pos) | balanced (neg/pos)",
        "early_stopping": "stop after this many rounds without validation AP gain", "seed": "LightGBM seed",
        "threads": "LightGBM threads (0: all cores)",
    }
    for f in fields(FitParams):
        default = getattr(d, f.name)
        name = f"lgb_{f.name}" if f.name in ("seed", "threads") else f.name
        add(p, f"--{name.replace('_', '-')}", f"FRAUDSTREAM_{name.upper()}", default, helps[f.name],
            type(default), dest=f"fit_{f.name}")
    add(p, "--alert-budget", "FRAUDSTREAM_ALERT_BUDGET", 100,
        "decision threshold rule: at most this many alerts per day (mean over the delay window)", positive_int)
    add(p, "--folds", "FRAUDSTREAM_FOLDS", 4, "prequential folds (0: none)", int)


def _data_options(p: argparse.ArgumentParser) -> None:
    add(p, "--transactions", "FRAUDSTREAM_TRANSACTIONS", None, "transactions Parquet file (else simulate)", Path)
    add(p, "--labels", "FRAUDSTREAM_LABELS", None, "labels Parquet file", Path)
    add(p, "--now", "FRAUDSTREAM_NOW", None, "the time no event of the files may be after (the worker's rule): "
        "an ISO-8601 UTC time or epoch ms; default: the wall clock (set it to replay a later history)", epoch_ms)


def _history_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-short-history", action="store_true",
                   help="train although the history before the first training window is shorter than the features' "
                        "look-back (refused by default; the report carries a warning)")


def epoch_ms(text: str) -> int:
    """``--now``: epoch milliseconds, or an ISO-8601 time (UTC unless it names its zone)."""
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch milliseconds nor an ISO-8601 time") from None
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _bundle_options(p: argparse.ArgumentParser) -> None:
    add(p, "--out", "FRAUDSTREAM_BUNDLES", Path("bundles"), "directory of model bundles", Path)
    p.add_argument("--sign", action="store_true",
                   help="sign the bundle with HMAC-SHA256 using the key in env FRAUDSTREAM_BUNDLE_KEY")


def _score_options(p: argparse.ArgumentParser) -> None:
    add(p, "--bundle", "FRAUDSTREAM_BUNDLE", None, "model bundle directory to score with (required)", Path)
    add(p, "--transactions", "FRAUDSTREAM_TRANSACTIONS", None, "transactions Parquet file to score (required)", Path)
    add(p, "--labels", "FRAUDSTREAM_LABELS", None, "labels Parquet file (unset: no labels, the terminal risk "
        "features see no fraud)", Path)
    # ops.configref keys the README's rows by the longest option string: --scores-out keeps this row apart
    # from train's --out (another variable, another meaning); --out is the short form.
    out = SimpleNamespace(add_argument=lambda name, **kw: p.add_argument("--out", name, **kw))
    add(out, "--scores-out", "FRAUDSTREAM_SCORES_OUT", None, "the scores Parquet file to write (also --out; "
        "required)", Path, dest="out")
    add(p, "--chunk-rows", "FRAUDSTREAM_SCORE_CHUNK_ROWS", SCORE_CHUNK_ROWS, "rows per ONNX Runtime call and Parquet "
        "row group", positive_int)
    add(p, "--now", "FRAUDSTREAM_NOW", None, "the time no event of the files may be after (the worker's rule): "
        "an ISO-8601 UTC time or epoch ms; default: the wall clock (set it to replay a later history)", epoch_ms)
    add(p, "--require-signature", "FRAUDSTREAM_REQUIRE_SIGNATURE", False,
        "refuse a bundle without a valid HMAC signature (key in FRAUDSTREAM_BUNDLE_KEY)", flag, nargs="?", const=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="write simulated transactions and labels to Parquet")
    _sim_options(sim)
    add(sim, "--data-dir", "FRAUDSTREAM_DATA", Path("data"), "where to write the Parquet files", Path)
    train = sub.add_parser("train", help="fit, evaluate, and write a model bundle")
    _data_options(train)
    _history_options(train)
    _sim_options(train)
    _fit_options(train)
    _bundle_options(train)
    run = sub.add_parser("run", help="simulate, then train (all steps)")
    _sim_options(run)
    _history_options(run)
    _fit_options(run)
    _bundle_options(run)
    add(run, "--data-dir", "FRAUDSTREAM_DATA", Path("data"), "where to write the simulated Parquet files", Path)
    ev = sub.add_parser("evaluate", help="handbook protocol over several generator seeds and its forward test "
                        "folds (--folds, default 4; mean, std)")
    _sim_options(ev)
    _fit_options(ev)
    ev.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="simulator seeds (default 0 1 2)")
    ev.add_argument("--generator", choices=("handbook", "other"), default="handbook",
                    help="the handbook's simulator, or trainer/othersim.py (other spending and fraud patterns)")
    add(ev, "--train-days", "FRAUDSTREAM_TRAIN_DAYS", TRAIN_DAYS, "training window length in days (ends where "
        "the book's does; validation is the week before it; the handbook's is 7)", positive_int)
    add(ev, "--json-out", "FRAUDSTREAM_EVAL_JSON", None, "write the results as JSON here", Path)
    ex = sub.add_parser("export", help="re-export a bundle's LightGBM model to ONNX, check parity, re-seal")
    ex.add_argument("bundle", type=Path, help="bundle directory")
    sc = sub.add_parser("score", help="score a Parquet history with a bundle (offline features, ONNX Runtime) "
                        "into a scores Parquet file: backfills, audits")
    _score_options(sc)
    from trainer.registry import add_commands

    add_commands(sub)  # publish, promote, rollback, models: the registry on Kafka (trainer/registry.py)
    from trainer.retrain import add_command

    add_command(sub)  # retrain: continual retraining from the topics (trainer/retrain.py)
    return parser


def _sim_config(args: argparse.Namespace, seed: int | None = None) -> SimConfig:
    if args.quick:
        return SimConfig(QUICK.customers, QUICK.terminals, QUICK.days, args.start,
                         args.seed if seed is None else seed)
    return SimConfig(args.customers, args.terminals, args.days, args.start, args.seed if seed is None else seed)


def _fit_params(args: argparse.Namespace) -> FitParams:
    return FitParams(**{f.name: getattr(args, f"fit_{f.name}") for f in fields(FitParams)})


def _key(args: argparse.Namespace) -> bytes | None:
    if not getattr(args, "sign", False):
        return None
    key = os.environ.get("FRAUDSTREAM_BUNDLE_KEY", "")
    if len(key) < 16:
        raise FraudstreamError("--sign needs FRAUDSTREAM_BUNDLE_KEY set to a secret of at least 16 characters")
    return key.encode()


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[trainer] fitting"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[metric]}"), TimeElapsedColumn(), transient=True)


def _reading_progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[trainer] reading"), BarColumn(), TextColumn("{task.completed:,} rows"),
                    TimeElapsedColumn(), transient=True)


def _simulate(cfg: SimConfig, label_delay_days: int | None) -> tuple[Any, Any]:
    from trainer.simulate import labels_of, simulate

    t0 = time.monotonic()
    h = simulate(cfg)
    _log(f"simulated {len(h)} transactions ({h.is_fraud.mean():.2%} fraud), {cfg.customers} customers, "
         f"{cfg.terminals} terminals, {cfg.days} days from {cfg.start}, seed {cfg.seed} "
         f"({time.monotonic() - t0:.1f}s)")
    return h, labels_of(h, label_delay_days)


def _check_history(args: argparse.Namespace, history: Any, split: Any, facts: dict[str, Any]) -> None:
    """Too little history before the split's first window: refused, or a warning in the report."""
    from trainer.data import DataQualityError, history_shortfall

    short = history_shortfall(history, min(split.train.start_ms, split.validation.start_ms))
    if short is None:
        return
    if not args.allow_short_history:
        raise DataQualityError([short], "too little history for this split")
    _log(f"warning: {short}")
    facts["warning"] = f"trained with --allow-short-history: {short}"


def _train(args: argparse.Namespace, history: Any, labels: Any, facts: dict[str, Any]) -> Path:
    from trainer.pipeline import Dataset, default_split, train_and_evaluate, write_bundle

    key = _key(args)
    split = default_split(history)
    _check_history(args, history, split, facts)
    t0 = time.monotonic()
    ds = Dataset.build(history, labels)
    _log(f"features: {ds.x.shape[0]} rows x {ds.x.shape[1]} ({time.monotonic() - t0:.1f}s)")
    params = _fit_params(args)
    with _progress() as bar:
        task = bar.add_task("fit", total=params.rounds, metric="")

        def progress(i: int, total: int, metrics: dict[str, float]) -> None:
            shown = " ".join(f"{k.split(':')[1]}={v:.4f}" for k, v in metrics.items())
            bar.update(task, completed=i, total=total, metric=shown)

        trained = train_and_evaluate(ds, split, params, args.alert_budget, args.folds, _log,
                                     progress, facts)
    for m in trained.report.models:
        _log(f"{m.name}: " + " | ".join(
            f"{part} AUC {getattr(m, part).auc:.3f} AP {getattr(m, part).ap:.3f} CP@100 {getattr(m, part).cp100:.3f}"
            for part in ("train", "validation", "test")))
    th = trained.threshold
    _log(f"threshold {th.value:.6f} ({th.rule}, budget {th.budget_per_day}/day, "
         f"expected {th.expected_alerts_per_day:.1f} alerts/day)")
    bundle = write_bundle(trained, args.out, key, _log)
    _log(f"bundle written: {bundle} ({time.monotonic() - t0:.1f}s total)")
    print(bundle)
    return bundle


def cmd_simulate(args: argparse.Namespace) -> int:
    from trainer.data import write_history

    cfg = _sim_config(args)
    h, _ = _simulate(cfg, args.label_delay_days)
    tx, lab = write_history(h, args.data_dir, feedback_delay_days=args.label_delay_days)
    _log(f"wrote {tx} and {lab}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.transactions or args.labels:
        from trainer.data import Now, load_history

        if not (args.transactions and args.labels):
            raise FraudstreamError("--transactions and --labels go together")
        t0 = time.monotonic()
        with _reading_progress() as bar:
            task = bar.add_task("read", total=None)
            now = None if args.now is None else Now(args.now)
            loaded = load_history(args.transactions, args.labels, now=now,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))
        _log(f"loaded {args.transactions}, {args.labels} ({time.monotonic() - t0:.1f}s): {loaded.report}")
        _train(args, loaded.history, loaded.labels, {"source": "files", "transactions": str(args.transactions)})
        return 0
    cfg = _sim_config(args)
    h, lab = _simulate(cfg, args.label_delay_days)
    _train(args, h, lab, {"source": "simulator", **{f.name: getattr(cfg, f.name) for f in fields(SimConfig)},
                          "label_delay_days": args.label_delay_days,
                          "transactions": len(h), "fraud_rate": float(h.is_fraud.mean())})
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from trainer.data import write_history

    cfg = _sim_config(args)
    h, lab = _simulate(cfg, args.label_delay_days)
    write_history(h, args.data_dir, feedback_delay_days=args.label_delay_days)
    _log(f"wrote the history to {args.data_dir}/ (the load generator replays it)")
    _train(args, h, lab, {"source": "simulator", **{f.name: getattr(cfg, f.name) for f in fields(SimConfig)},
                          "label_delay_days": args.label_delay_days,
                          "transactions": len(h), "fraud_rate": float(h.is_fraud.mean())})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.report import PUBLISHED
    from trainer.seeds import METRICS, evaluate_seeds

    params = _fit_params(args)
    results = evaluate_seeds(lambda seed: _generate(args, seed), args.seeds, params, max(args.folds, 1),
                             args.train_days, _log)
    summary = results.summary()
    print(f"{args.generator} generator, seeds {args.seeds}, {max(args.folds, 1)} forward test folds, "
          f"train {args.train_days} days")
    print(f"{'model':34} " + " ".join(f"{m:>20}" for m in METRICS))
    for name, r in summary.items():
        print(f"{name + ' (ours, mean ± std)':34} " + " ".join(
            f"{m:.3f} ± {sd:.3f}".rjust(20) for m, sd in zip(r["mean"], r["std"], strict=True)))
    for name, (auc, ap, cp) in PUBLISHED.items():  # its CP@100 drops the cards found on earlier days
        print(f"{name:34} {auc:>20.3f} {ap:>20.3f} {'':>20} {cp:>20.3f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"generator": args.generator, "seeds": args.seeds,
                                             "folds": max(args.folds, 1), "train_days": args.train_days,
                                             "params": params.as_dict(), "models": summary}, indent=2))
    return 0


def _generate(args: argparse.Namespace, seed: int) -> tuple[Any, Any]:
    """One seed's history and labels from the chosen generator."""
    if args.generator == "handbook":
        return _simulate(_sim_config(args, seed), args.label_delay_days)
    from trainer.othersim import OtherConfig, simulate_other
    from trainer.simulate import labels_of

    cfg = _sim_config(args, seed)
    h = simulate_other(OtherConfig(cfg.customers, cfg.terminals, cfg.days, cfg.start, seed))
    _log(f"generated {len(h)} transactions ({h.is_fraud.mean():.2%} fraud) with the other generator, seed {seed}")
    return h, labels_of(h, args.label_delay_days)


def cmd_export(args: argparse.Namespace) -> int:
    import lightgbm as lgb
    import onnx

    from schemas.bundle import TENSOR_ONNX_FILE, load_bundle, seal
    from trainer.export import check_parity, edge_rows, tensor_manifest, to_onnx, to_tensor_onnx

    bundle = load_bundle(args.bundle)
    booster = lgb.Booster(model_file=str(bundle.path / "model.lgb.txt"))
    model = to_onnx(booster)
    tensor = to_tensor_onnx(booster)
    rng = np.random.default_rng(0)
    probe = rng.gamma(2.0, 20.0, size=(5000, booster.num_feature())).astype(np.float32)
    probe = np.vstack([probe, edge_rows(booster, probe, rng)])
    parity = check_parity(booster, model, probe)
    tensor_parity = check_parity(booster, tensor, probe, what="tensorized ONNX")
    onnx.save(model, str(bundle.path / "model.onnx"))
    onnx.save(tensor, str(bundle.path / TENSOR_ONNX_FILE))
    key = os.environ.get("FRAUDSTREAM_BUNDLE_KEY", "").encode() if bundle.signed else None
    seal(bundle.path, {**bundle.manifest, "parity": {"rows": parity.rows, "edge_rows": parity.edge_rows,
                                                      "max_abs_diff": parity.max_abs_diff},
                       "tensor_onnx": tensor_manifest(tensor, tensor_parity, TENSOR_ONNX_FILE)}, key or None)
    _log(f"re-exported {bundle.path}: parity max |diff| {parity.max_abs_diff:.2e} (tree graph), "
         f"{tensor_parity.max_abs_diff:.2e} (tensorized graph) over {parity.rows} rows")
    return 0


def _score_progress() -> Any:
    """A live bar on stderr when that is a terminal; None elsewhere (see :func:`_score_reporter`)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    return Progress(TextColumn("[trainer] {task.description}"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.completed:,} rows"), TimeElapsedColumn(), console=console, transient=True)


def _score_reporter(bar: Any) -> Callable[[str, int, int], None]:
    """``score_history``'s progress: into the bar, or without one a log line every 5 s while scoring."""
    tasks: dict[str, Any] = {}
    last = [time.monotonic()]

    def progress(stage: str, done: int, total: int) -> None:
        if bar is not None:
            if stage not in tasks:
                tasks[stage] = bar.add_task({"read": "reading", "score": "scoring"}[stage], total=total)
            bar.update(tasks[stage], completed=done, total=total)
        elif stage == "score" and done < total and time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            _log(f"scoring: {done:,}/{total:,} rows")

    return progress


def _required(args: argparse.Namespace) -> None:
    """The score command's files: given, and there (one line each, naming the fix)."""
    needs = {"bundle": ("--bundle", "FRAUDSTREAM_BUNDLE", "the model bundle directory, e.g. bundles/latest"),
             "transactions": ("--transactions", "FRAUDSTREAM_TRANSACTIONS", "the transactions Parquet file"),
             "out": ("--out", "FRAUDSTREAM_SCORES_OUT", "the scores Parquet file to write")}
    for dest, (name, env, what) in needs.items():
        if getattr(args, dest) is None:
            raise FraudstreamError(f"{name} is required (or env {env}): {what}")
    for name, path, fix in (("--transactions", args.transactions, "`python -m trainer simulate` writes one"),
                            ("--labels", args.labels, "or leave --labels out to score without labels")):
        if path is not None and not path.is_file():
            raise FraudstreamError(f"{name} {path}: no such file: give a Parquet file ({fix})")


def cmd_score(args: argparse.Namespace) -> int:
    from schemas.bundle import env_key, load_bundle
    from trainer.data import Now
    from trainer.score import score_history

    _required(args)
    bundle = load_bundle(args.bundle, key=env_key(), require_signature=args.require_signature)
    _log(f"model {bundle.model_version}, threshold {bundle.threshold:.6f} ({bundle.onnx_path})")
    bar = _score_progress()
    with bar if bar is not None else contextlib.nullcontext():
        summary = score_history(bundle, args.transactions, args.labels, args.out, chunk_rows=args.chunk_rows,
                                now=None if args.now is None else Now(args.now), log=_log,
                                progress=_score_reporter(bar))
    _log(summary.line())
    print(summary.out)
    return 0


COMMANDS = {"simulate": cmd_simulate, "train": cmd_train, "run": cmd_run, "evaluate": cmd_evaluate,
            "export": cmd_export, "score": cmd_score}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "retrain":
            from trainer.retrain import run as retrain

            return retrain(args)
        if args.command not in COMMANDS:
            from trainer.registry import run

            return run(args)
        return COMMANDS[args.command](args)
    except (FraudstreamError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
