"""A second transaction generator, deliberately unlike the handbook's (``trainer.simulate``), so that a
model's quality is not a property of one simulator.

Genuine spending:

* customers live in towns (a mixture of Gaussian clusters on a 100 x 100 map), spend log-normal amounts
  (median e^mu with mu ~ U(2, 4.5), sigma ~ U(0.3, 0.9)), at a rate ~ Gamma(2, 1) a day scaled by a
  per-customer weekend factor ~ U(0.4, 1.6), at hours from a morning/lunch/evening mixture;
* each customer has a handful of habitual terminals (3 + Poisson(4), near home) picked with Zipf-like
  weights; one transaction in twenty goes to any terminal near home.

Fraud (scenario codes of ``History``):

1. **card testing** — each day 2 cards are tested: 3 to 8 small amounts (0.50 to 3.00) at unfamiliar
   terminals within 30 minutes, then 1 or 2 purchases of 5 to 20 times the card's median within 2 hours;
2. **account takeover** — each day 3 cards are taken over for 7 days: Poisson(1.5) extra purchases a day at
   terminals far from home, about 3 times the card's median;
3. **compromised merchants** — each day 1 terminal is compromised for 21 days: 40 % of its genuine
   transactions in that window are fraud (skimmed cards), with unchanged amounts.

Everything comes from one seeded ``numpy.random.Generator``: a seed gives the same history bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer.simulate import DAY_MS, History, start_ms, tx_ids

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
HOUR_MS = 3_600_000
TOWNS = 8


@dataclass(frozen=True)
class OtherConfig:
    customers: int = 5000
    terminals: int = 10000
    days: int = 183
    start: str = "2018-04-01"
    seed: int = 0


@dataclass
class _Rows:
    """Transactions under construction (unsorted)."""

    cust: Ints
    term: Ints
    ts: Ints
    cents: Ints
    scenario: Ints

    @staticmethod
    def join(parts: list[_Rows]) -> _Rows:
        return _Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("cust", "term", "ts", "cents",
                                                                              "scenario")))


@dataclass(frozen=True)
class _World:
    home: Floats           # [customers, 2]
    term_xy: Floats        # [terminals, 2]
    mu: Floats             # log of each card's median amount
    sigma: Floats
    rate: Floats           # transactions a day
    weekend: Floats        # weekend factor
    habits: list[Ints]     # each card's habitual terminals, most used first


def simulate_other(cfg: OtherConfig | None = None, *, seed: int | None = None) -> History:
    """A history from this generator (``seed`` overrides the config's)."""
    cfg = cfg or OtherConfig()
    if seed is not None:
        cfg = OtherConfig(cfg.customers, cfg.terminals, cfg.days, cfg.start, seed)
    rng = np.random.default_rng(cfg.seed)
    world = _world(rng, cfg)
    t0 = start_ms(cfg.start)
    genuine = _genuine(rng, world, cfg.days, t0)
    _merchants(rng, genuine, cfg, t0)
    rows = _Rows.join([genuine, _card_testing(rng, world, cfg, t0), _takeover(rng, world, cfg, t0)])
    return _history(rows)


def _world(rng: np.random.Generator, cfg: OtherConfig) -> _World:
    towns = rng.uniform(10, 90, size=(TOWNS, 2))
    spread = rng.uniform(3, 10, size=TOWNS)
    ct, tt = rng.integers(0, TOWNS, cfg.customers), rng.integers(0, TOWNS, cfg.terminals)
    home = np.clip(towns[ct] + rng.normal(0, 1, (cfg.customers, 2)) * spread[ct, None], 0, 100)
    term_xy = np.clip(towns[tt] + rng.normal(0, 1, (cfg.terminals, 2)) * spread[tt, None], 0, 100)
    order = np.argsort(term_xy[:, 0])
    habits = [_habits(rng, h, term_xy, order) for h in home]
    return _World(home, term_xy, rng.uniform(2, 4.5, cfg.customers), rng.uniform(0.3, 0.9, cfg.customers),
                  rng.gamma(2.0, 1.0, cfg.customers), rng.uniform(0.4, 1.6, cfg.customers), habits)


def _habits(rng: np.random.Generator, home: Floats, term_xy: Floats, by_x: Ints) -> Ints:
    """3 + Poisson(4) terminals among the 40 nearest to home, nearest first."""
    lo, hi = np.searchsorted(term_xy[by_x, 0], [home[0] - 15, home[0] + 15])
    near = by_x[lo:hi] if hi - lo >= 40 else by_x
    d = np.hypot(*(term_xy[near] - home).T)
    nearest = near[np.argsort(d)[:40]]
    k = min(len(nearest), 3 + int(rng.poisson(4)))
    return nearest[np.sort(rng.choice(len(nearest), size=k, replace=False))]


def _genuine(rng: np.random.Generator, w: _World, days: int, t0: int) -> _Rows:
    n_cust = len(w.mu)
    day = np.arange(days)
    weekend = ((t0 // DAY_MS + day + 3) % 7 >= 5)
    lam = w.rate[:, None] * np.where(weekend[None, :], w.weekend[:, None], 1.0)
    counts = rng.poisson(lam).ravel()
    cust = np.repeat(np.repeat(np.arange(n_cust), days), counts)
    d = np.repeat(np.tile(day, n_cust), counts)
    ts = t0 + d * DAY_MS + _hours(rng, len(cust))
    cents = _cents(np.exp(rng.normal(w.mu[cust], w.sigma[cust])))
    return _Rows(cust, _pick_terminals(rng, w, cust), ts, cents, np.zeros(len(cust), np.int64))


def _hours(rng: np.random.Generator, n: int) -> Ints:
    """Milliseconds into the day: morning, lunch or evening peaks, within the day."""
    peak = rng.choice(np.array([9.0, 13.0, 19.0]), size=n, p=[0.3, 0.3, 0.4])
    hours = np.clip(rng.normal(peak, 1.8), 0, 23.999)
    return (hours * HOUR_MS).astype(np.int64) // 1000 * 1000


def _pick_terminals(rng: np.random.Generator, w: _World, cust: Ints) -> Ints:
    """A habitual terminal (Zipf-like: the k-th with weight 1/k), or one in twenty anywhere near home."""
    sizes = np.array([len(h) for h in w.habits])
    flat = np.concatenate(w.habits)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    u = rng.random(len(cust))
    rank = np.floor(np.exp(u * np.log(sizes[cust] + 1.0))).astype(np.int64) - 1  # P(k) ~ 1/k, roughly
    term = flat[starts[cust] + np.clip(rank, 0, sizes[cust] - 1)]
    stray = rng.random(len(cust)) < 0.05
    term[stray] = _near(rng, w, w.home[cust[stray]], 10.0)
    out: Ints = term
    return out


def _near(rng: np.random.Generator, w: _World, xy: Floats, radius: float) -> Ints:
    """A random terminal among a sample of 64, the nearest to a point jittered by ``radius``."""
    target = xy + rng.normal(0, radius, xy.shape)
    cand = rng.integers(0, len(w.term_xy), size=(len(xy), 64))
    d = np.hypot(*(np.moveaxis(w.term_xy[cand], -1, 0) - target.T[:, :, None]))
    out: Ints = cand[np.arange(len(xy)), np.argmin(d, axis=1)]
    return out


def _card_testing(rng: np.random.Generator, w: _World, cfg: OtherConfig, t0: int) -> _Rows:
    victims = rng.integers(0, cfg.customers, size=(cfg.days, 2)).ravel()
    day = np.repeat(np.arange(cfg.days), 2)
    start = t0 + day * DAY_MS + _hours(rng, len(day))
    tests = rng.integers(3, 9, len(victims))
    buys = rng.integers(1, 3, len(victims))
    c_test, s_test = np.repeat(victims, tests), np.repeat(start, tests)
    c_buy, s_buy = np.repeat(victims, buys), np.repeat(start, buys)
    ts = np.concatenate([s_test + rng.integers(0, 30 * 60_000, len(c_test)) // 1000 * 1000,
                         s_buy + rng.integers(30 * 60_000, 2 * HOUR_MS, len(c_buy)) // 1000 * 1000])
    cust = np.concatenate([c_test, c_buy])
    cents = np.concatenate([rng.integers(50, 301, len(c_test)),
                            _cents(np.exp(w.mu[c_buy]) * rng.uniform(5, 20, len(c_buy)))])
    term = _near(rng, w, w.home[cust], 40.0)
    return _Rows(cust, term, ts, cents, np.ones(len(cust), np.int64))


def _takeover(rng: np.random.Generator, w: _World, cfg: OtherConfig, t0: int) -> _Rows:
    victims = rng.integers(0, cfg.customers, size=(cfg.days, 3)).ravel()
    first = np.repeat(np.arange(cfg.days), 3)
    span = np.arange(7)
    cust = np.repeat(victims, 7)
    day = (first[:, None] + span[None, :]).ravel()
    keep = day < cfg.days
    cust, day = cust[keep], day[keep]
    n = rng.poisson(1.5, len(cust))
    cust, day = np.repeat(cust, n), np.repeat(day, n)
    far = np.clip(100 - w.home[cust], 0, 100)  # the other side of the map
    ts = t0 + day * DAY_MS + _hours(rng, len(cust))
    cents = _cents(np.exp(w.mu[cust]) * rng.uniform(2, 4, len(cust)))
    return _Rows(cust, _near(rng, w, far, 15.0), ts, cents, np.full(len(cust), 2, np.int64))


def _merchants(rng: np.random.Generator, rows: _Rows, cfg: OtherConfig, t0: int) -> None:
    """Mark 40 % of the genuine transactions of each compromised terminal's 21 days as scenario 3."""
    picks = rng.integers(0, cfg.terminals, cfg.days)
    day = (rows.ts - t0) // DAY_MS
    by_term: dict[int, list[int]] = {int(t): [] for t in picks}
    for d, t in enumerate(picks.tolist()):
        by_term[t].append(d)
    hit = np.zeros(len(day), dtype=bool)
    for t, starts in by_term.items():
        at = np.flatnonzero(rows.term == t)
        for s in starts:
            hit[at[(day[at] >= s) & (day[at] < s + 21)]] = True
    skim = hit & (rng.random(len(day)) < 0.4)
    rows.scenario[skim] = 3


def _cents(amount: Floats) -> Ints:
    return np.maximum(np.rint(amount * 100), 1).astype(np.int64)


def _history(rows: _Rows) -> History:
    order = np.argsort(rows.ts, kind="stable")
    n = len(order)
    scenario = rows.scenario[order].astype(np.int8)
    return History(tx_id=tx_ids(n), ts=rows.ts[order],
                   customer_id=np.char.add("C", rows.cust[order].astype(str)),
                   terminal_id=np.char.add("M", rows.term[order].astype(str)),
                   amount_cents=rows.cents[order], is_fraud=(scenario != 0).astype(np.int8), scenario=scenario)
