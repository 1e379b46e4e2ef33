"""Drift injection (ops/loadgen/drift.py) and the load generator's --drift-from-day."""

from __future__ import annotations

import numpy as np
import pytest

from ops.loadgen.__main__ import _history, build_parser, main
from ops.loadgen.drift import MAX_CENTS, first_day, inject
from trainer.simulate import DAY_MS, SimConfig, labels_of, simulate

CFG = SimConfig(customers=300, terminals=600, days=20, seed=4)


@pytest.fixture(scope="module")
def h():  # type: ignore[no-untyped-def]
    return simulate(CFG)


def test_amount_drift_scales_amounts_from_the_day_on_and_nothing_else(h) -> None:  # type: ignore[no-untyped-def]
    before = h.amount_cents.copy()
    out = inject(h, "amount", 12, factor=2.5)
    after = h.ts // DAY_MS >= first_day(h) + 12
    assert 0 < after.sum() < len(h)
    assert np.array_equal(h.amount_cents, before), "the input history is not changed"
    assert np.array_equal(out.amount_cents[~after], before[~after])
    assert np.array_equal(out.amount_cents[after], np.clip(np.round(before[after] * 2.5), 1, MAX_CENTS))
    for name in ("tx_id", "ts", "customer_id", "terminal_id", "is_fraud", "scenario"):
        assert np.array_equal(getattr(out, name), getattr(h, name)), name
    tiny = inject(h, "amount", 0, factor=1e-9)
    assert tiny.amount_cents.min() == 1 and inject(h, "amount", 0, factor=1e9).amount_cents.max() == MAX_CENTS


def test_fraud_drift_compromises_more_terminals_from_the_day_on(h) -> None:  # type: ignore[no-untyped-def]
    out = inject(h, "fraud", 10, factor=3.0, seed=1)
    after = h.ts // DAY_MS >= first_day(h) + 10
    assert np.array_equal(out.is_fraud[~after], h.is_fraud[~after])
    assert np.all(out.is_fraud >= h.is_fraud), "frauds stay frauds"
    new = (out.is_fraud == 1) & (h.is_fraud == 0)
    picked = np.unique(out.terminal_id[new])  # 4 more compromises a day beside the simulator's 2, for 10 days
    assert 30 <= len(picked) <= 40 and new.sum() > 100
    assert set(out.scenario[new].tolist()) == {2} and np.array_equal(out.amount_cents, h.amount_cents)
    assert np.array_equal(inject(h, "fraud", 10, factor=3.0, seed=1).is_fraud, out.is_fraud)  # seeded
    assert np.array_equal(inject(h, "fraud", 10, factor=1.0).is_fraud, h.is_fraud)  # no extra picks
    assert labels_of(out).is_fraud.sum() == out.is_fraud.sum()  # labels made afterwards follow


@pytest.mark.parametrize(("kind", "factor", "from_day"), [("prices", 2.0, 1), ("amount", 0.0, 1), ("amount", 2.0, -1)])
def test_bad_drift_settings_are_refused(h, kind: str, factor: float, from_day: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="drift"):
        inject(h, kind, from_day, factor)


def test_the_load_generator_sends_the_drifted_history() -> None:
    argv = ["--customers", str(CFG.customers), "--terminals", str(CFG.terminals), "--days", str(CFG.days),
            "--seed", str(CFG.seed)]
    plain, _, _ = _history(build_parser().parse_args(argv), None)
    drifted, labels, _ = _history(build_parser().parse_args([*argv, "--drift-from-day", "5"]), None)
    assert np.array_equal(drifted.amount_cents, inject(plain, "amount", 5, 2.0).amount_cents)
    fraud, labels, _ = _history(build_parser().parse_args([*argv, "--drift-from-day", "5", "--drift-kind", "fraud"]),
                                None)
    assert labels.is_fraud.sum() == fraud.is_fraud.sum() > plain.is_fraud.sum()


def test_fraud_drift_on_a_file_is_refused(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = main(["--transactions", str(tmp_path / "t.parquet"), "--labels", str(tmp_path / "l.parquet"),
               "--drift-from-day", "3", "--drift-kind", "fraud", "--bootstrap", "127.0.0.1:1"])
    assert rc == 2
    assert "--drift-kind fraud needs the simulator" in capsys.readouterr().err
