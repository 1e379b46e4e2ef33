"""``python -m trainer publish|promote|rollback|models``: the model registry on the users' Kafka.

- ``publish BUNDLE``: the bundle, verified first (checksums, feature version, signature with
  ``FRAUDSTREAM_BUNDLE_KEY``; ``--require-signature`` refuses an unsigned one), chunked onto the
  compacted ``model-bundles`` topic; publishing the same version again with the same content is a no-op,
  with other content it replaces it;
- ``promote VERSION``: makes a published version the champion (``--shadow``: the shadow), one record on
  the compacted ``model-control`` topic, which every worker started without ``--bundle`` follows; the
  version is fetched and verified first, as the workers will (a tampered chunk, another feature set, a
  missing signature under ``--require-signature`` are refused here, exit 2);
- ``rollback``: the champion before the current one comes back;
- ``models``: every published version, its test metrics, when it was created, and its state.

The records' layout is ``schemas/registry.py``'s; the Kafka edge ``schemas/registry_io.py``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time

from schemas.bundle import env_key, load_bundle
from schemas.errors import BundleError
from schemas.kafka_auth import KafkaAuth
from schemas.registry import BUNDLES_TOPIC, CONTROL_TOPIC, Control
from schemas.registry_io import Registry
from schemas.settings import add, flag

COMMANDS = ("publish", "promote", "rollback", "models")


def _common(p: argparse.ArgumentParser) -> None:
    add(p, "--bootstrap", "FRAUDSTREAM_BOOTSTRAP", os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "Kafka bootstrap servers of the registry", shown="$KAFKA_BOOTSTRAP, else 127.0.0.1:9092")
    add(p, "--topic-model-bundles", "FRAUDSTREAM_TOPIC_MODEL_BUNDLES", BUNDLES_TOPIC, "topic: the bundles (compacted)")
    add(p, "--topic-model-control", "FRAUDSTREAM_TOPIC_MODEL_CONTROL", CONTROL_TOPIC,
        "topic: champion and shadow (compacted)")


def _change(p: argparse.ArgumentParser) -> None:
    _common(p)
    add(p, "--by", "FRAUDSTREAM_REGISTRY_BY", None, "who makes the change (recorded)", shown="the login name")
    add(p, "--reason", "FRAUDSTREAM_REGISTRY_REASON", "", "why (recorded)")


def _signature(p: argparse.ArgumentParser) -> None:
    add(p, "--require-signature", "FRAUDSTREAM_REQUIRE_SIGNATURE", False,
        "refuse a bundle without a valid HMAC signature (key in FRAUDSTREAM_BUNDLE_KEY)", flag, nargs="?", const=True)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pub = sub.add_parser("publish", help="put a bundle in the registry (topic model-bundles)")
    pub.add_argument("bundle", help="bundle directory")
    _common(pub)
    _signature(pub)
    pro = sub.add_parser("promote", help="make a published version the champion (or the shadow)")
    pro.add_argument("version", help="a published model version (see `models`)")
    pro.add_argument("--shadow", action="store_true", help="make it the shadow instead (scores, never flags)")
    _change(pro)
    _signature(pro)
    rb = sub.add_parser("rollback", help="make the previous champion the champion again")
    _change(rb)
    models = sub.add_parser("models", help="list the published versions and which serve")
    _common(models)


def run(args: argparse.Namespace) -> int:
    reg = Registry(args.bootstrap, KafkaAuth.from_env(), args.topic_model_bundles, args.topic_model_control,
                   client_id="fraudstream-trainer-registry")
    try:
        return {"publish": _publish, "promote": _promote, "rollback": _rollback, "models": _models}[args.command](
            reg, args)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        reg.close()


def _publish(reg: Registry, args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle, key=env_key(), require_signature=args.require_signature)
    t0 = time.monotonic()
    index, written = reg.publish(bundle)
    size = sum(f.size for f in index.files.values())
    print(f"{'published' if written else 'already published'}: {bundle.model_version} ({len(index.files)} files, "
          f"{size / 1e6:.1f} MB, {sum(len(f.chunks) for f in index.files.values())} chunks, "
          f"{'signed' if bundle.signed else 'unsigned'}) to {reg.bundles_topic} in {time.monotonic() - t0:.1f}s",
          file=sys.stderr)
    print(bundle.model_version)
    return 0


def _who(args: argparse.Namespace) -> str:
    return str(args.by or getpass.getuser())


def _write(reg: Registry, c: Control) -> int:
    reg.write_control(c)
    print(f"champion {c.champion or '-'}, shadow {c.shadow or '-'} ({c.reason}, by {c.by})", file=sys.stderr)
    return 0


def _promote(reg: Registry, args: argparse.Namespace) -> int:
    if args.version not in reg.indexes():
        raise BundleError(f"model {args.version} is not published: `python -m trainer publish BUNDLE` first "
                          f"(`python -m trainer models` lists what is)")
    reg.verify(args.version, env_key(), args.require_signature)  # what the workers will fetch, as they check it
    c, now = reg.control(), int(time.time() * 1000)
    if args.shadow:
        return _write(reg, c.with_shadow(args.version, now, _who(args), args.reason))
    return _write(reg, c.promote(args.version, now, _who(args), args.reason))


def _rollback(reg: Registry, args: argparse.Namespace) -> int:
    return _write(reg, reg.control().rollback(int(time.time() * 1000), _who(args), args.reason))


def _models(reg: Registry, args: argparse.Namespace) -> int:
    c = reg.control()
    rows = [("version", "created", "threshold", "test AUC", "test AP", "CP@100", "signed", "state")]
    for v, index in sorted(reg.indexes().items(), key=lambda kv: kv[1].created):
        m = index.metrics
        state = ("champion" if v == c.champion else "shadow" if v == c.shadow
                 else "previous" if v in c.previous else "-")
        rows.append((v, index.created[:19], _num(m.get("threshold")), _num(m.get("auc")), _num(m.get("ap")),
                     _num(m.get("cp100")), "yes" if index.signed else "no", state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _num(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) else "-"
