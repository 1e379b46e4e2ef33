"""``python -m ops.docker.train``: compose's trainer job: train a bundle unless a good one is there.

``docker compose up`` starts a finished one-shot job again, and ``--scale worker=N`` is an ``up``.
Were the job to train every time, a scale-out would put a new bundle under ``latest`` and the new
workers would score with another model than the running ones. So it keeps the ``latest`` bundle
when that verifies (``schemas.bundle.load_bundle``: checksums, feature version) and trains only
when there is none or ``--retrain`` (``FRAUDSTREAM_RETRAIN=true``) asks; restart the workers after
a retrain. Either way the bundle's path is the last line on stdout, as with the trainer.

Every other flag and env variable is ``python -m trainer run``'s (sizes, folds, ``--out``, ...).
"""

from __future__ import annotations

import argparse
import sys

from schemas.errors import FraudstreamError
from schemas.settings import add, flag

PROG = "python -m ops.docker.train"


def _own_options(add_help: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, add_help=add_help, usage=f"{PROG} [--retrain RETRAIN] [trainer run options]",
                                description="train a model bundle unless the latest one verifies; the other "
                                "options are `python -m trainer run`'s, listed below")
    add(p, "--retrain", "FRAUDSTREAM_RETRAIN", False, "train even when the latest bundle verifies", flag)
    return p


def main(argv: list[str] | None = None) -> int:
    from trainer.cli import build_parser
    from trainer.cli import main as trainer_main

    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        _own_options(add_help=True).print_help()
        print("\n`python -m trainer run` options:\n")
        return _trainer_help(build_parser())
    try:
        own, rest = _own_options().parse_known_args(argv)
        args = build_parser().parse_args(["run", *rest])
    except FraudstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    latest = args.out / "latest"
    if not own.retrain and latest.exists():
        from schemas.bundle import load_bundle

        try:
            bundle = load_bundle(latest)
        except FraudstreamError as exc:
            print(f"[train] {latest} does not verify ({exc}): training a new bundle", file=sys.stderr, flush=True)
        else:
            print(f"[train] kept {latest} -> {latest.resolve().name} (model {bundle.model_version}); "
                  f"FRAUDSTREAM_RETRAIN=true trains a new one", file=sys.stderr)
            print(latest.resolve())
            return 0
    return trainer_main(["run", *rest])


def _trainer_help(parser: argparse.ArgumentParser) -> int:
    try:
        parser.parse_args(["run", "--help"])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
