#!/usr/bin/env python3
"""Peer benchmark: NautilusTrader backtesting an EMA cross on Keel's synthetic trade ticks.

Loads the CSV written by `keel data synth` (header `ts,price,qty,side`, ts in ms)
into Nautilus `TradeTick`s for a BTCUSDT spot `CurrencyPair` (price precision 2,
size precision 5, taker/maker fee 10 bps) on a simulated venue with a CASH
account holding 10,000 USDT, and runs a `BacktestEngine` with an EMA-cross
strategy that uses Nautilus's built-in `ExponentialMovingAverage` indicators.

The strategy mirrors Keel's `ema_cross`: once both EMAs are initialised it
remembers whether fast > slow; on a change to "above" it buys `qty` at market
when flat with no open orders, on a change to "below" it sells the whole long
position at market.

Prints one line of JSON: load/run/total wall times, ticks/s over `engine.run()`
alone, peak RSS (ru_maxrss, KiB), orders, fills and the final balances.

Usage: python nautilus_ema_cross.py [--data /tmp/synth1m.csv] [--fast 100]
       [--slow 400] [--qty 0.001] [--bypass-risk]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from decimal import Decimal

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import nautilus_trader  # noqa: E402
from nautilus_trader.backtest.engine import BacktestEngine  # noqa: E402
from nautilus_trader.config import BacktestEngineConfig  # noqa: E402
from nautilus_trader.config import LoggingConfig  # noqa: E402
from nautilus_trader.config import RiskEngineConfig  # noqa: E402
from nautilus_trader.config import StrategyConfig  # noqa: E402
from nautilus_trader.indicators import ExponentialMovingAverage  # noqa: E402
from nautilus_trader.model.currencies import BTC  # noqa: E402
from nautilus_trader.model.currencies import USDT  # noqa: E402
from nautilus_trader.model.data import TradeTick  # noqa: E402
from nautilus_trader.model.enums import AccountType  # noqa: E402
from nautilus_trader.model.enums import AggressorSide  # noqa: E402
from nautilus_trader.model.enums import OmsType  # noqa: E402
from nautilus_trader.model.enums import OrderSide  # noqa: E402
from nautilus_trader.model.identifiers import InstrumentId  # noqa: E402
from nautilus_trader.model.identifiers import Symbol  # noqa: E402
from nautilus_trader.model.identifiers import Venue  # noqa: E402
from nautilus_trader.model.instruments import CurrencyPair  # noqa: E402
from nautilus_trader.model.objects import Money  # noqa: E402
from nautilus_trader.model.objects import Price  # noqa: E402
from nautilus_trader.model.objects import Quantity  # noqa: E402
from nautilus_trader.trading.strategy import Strategy  # noqa: E402

VENUE = Venue("SIM")


def btcusdt() -> CurrencyPair:
    """BTCUSDT spot with Keel's synth filters: tick 0.01, step 0.00001, 10 bps fees."""
    return CurrencyPair(
        instrument_id=InstrumentId(Symbol("BTCUSDT"), VENUE),
        raw_symbol=Symbol("BTCUSDT"),
        base_currency=BTC,
        quote_currency=USDT,
        price_precision=2,
        size_precision=5,
        price_increment=Price.from_str("0.01"),
        size_increment=Quantity.from_str("0.00001"),
        lot_size=None,
        max_quantity=Quantity.from_str("9000.00000"),
        min_quantity=Quantity.from_str("0.00001"),
        max_notional=None,
        min_notional=None,
        max_price=Price.from_str("1000000.00"),
        min_price=Price.from_str("0.01"),
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=Decimal("0.001"),
        taker_fee=Decimal("0.001"),
        ts_event=0,
        ts_init=0,
    )


def load_ticks(path: str, instrument: CurrencyPair) -> list[TradeTick]:
    df = pd.read_csv(
        path,
        dtype={"ts": np.int64, "price": np.float64, "qty": np.float64, "side": "category"},
    )
    ts = df["ts"].to_numpy(dtype=np.uint64) * np.uint64(1_000_000)  # ms -> ns
    sides = np.where(
        df["side"].to_numpy() == "buy",
        np.uint8(AggressorSide.BUYER),
        np.uint8(AggressorSide.SELLER),
    ).astype(np.uint8)
    trade_ids = [str(i) for i in range(1, len(df) + 1)]
    return TradeTick.from_raw_arrays_to_list(
        instrument.id,
        instrument.price_precision,
        instrument.size_precision,
        df["price"].to_numpy(dtype=np.float64),
        df["qty"].to_numpy(dtype=np.float64),
        sides,
        trade_ids,
        ts,
        ts.copy(),
    )


class EmaCrossConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    trade_size: Decimal
    fast_ema_period: int = 100
    slow_ema_period: int = 400


class EmaCross(Strategy):
    def __init__(self, config: EmaCrossConfig) -> None:
        super().__init__(config)
        self.fast_ema = ExponentialMovingAverage(config.fast_ema_period)
        self.slow_ema = ExponentialMovingAverage(config.slow_ema_period)
        self.above: bool | None = None
        self.qty: Quantity | None = None
        self.fills = 0

    def on_start(self) -> None:
        instrument = self.cache.instrument(self.config.instrument_id)
        self.qty = instrument.make_qty(self.config.trade_size)
        # Built-in indicator wiring: the data engine updates them before on_trade_tick.
        self.register_indicator_for_trade_ticks(self.config.instrument_id, self.fast_ema)
        self.register_indicator_for_trade_ticks(self.config.instrument_id, self.slow_ema)
        self.subscribe_trade_ticks(self.config.instrument_id)

    def on_trade_tick(self, tick: TradeTick) -> None:
        if not (self.fast_ema.initialized and self.slow_ema.initialized):
            return
        above = self.fast_ema.value > self.slow_ema.value
        was = self.above
        self.above = above
        if was is None or was == above:
            return
        iid = self.config.instrument_id
        if above:
            if self.portfolio.is_flat(iid) and not self.cache.orders_open(instrument_id=iid):
                self.submit_order(
                    self.order_factory.market(instrument_id=iid, order_side=OrderSide.BUY, quantity=self.qty),
                )
        elif self.portfolio.is_net_long(iid):
            self.close_all_positions(iid)

    def on_order_filled(self, event) -> None:
        self.fills += 1

    def on_stop(self) -> None:
        pass  # leave positions as they are (Keel does not flatten at the end either)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/synth1m.csv")
    ap.add_argument("--fast", type=int, default=100)
    ap.add_argument("--slow", type=int, default=400)
    ap.add_argument("--qty", default="0.001")
    ap.add_argument("--bypass-risk", action="store_true", help="skip Nautilus's pre-trade risk engine checks")
    ap.add_argument("--log-level", default="ERROR")
    args = ap.parse_args()

    t0 = time.perf_counter()
    instrument = btcusdt()
    ticks = load_ticks(args.data, instrument)
    t_parsed = time.perf_counter()

    engine = BacktestEngine(
        config=BacktestEngineConfig(
            logging=LoggingConfig(log_level=args.log_level),
            risk_engine=RiskEngineConfig(bypass=args.bypass_risk),
        ),
    )
    engine.add_venue(
        venue=VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.CASH,
        base_currency=None,  # multi-currency cash account
        starting_balances=[Money(10_000, USDT)],
    )
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    strategy = EmaCross(
        EmaCrossConfig(
            instrument_id=instrument.id,
            trade_size=Decimal(args.qty),
            fast_ema_period=args.fast,
            slow_ema_period=args.slow,
        ),
    )
    engine.add_strategy(strategy)
    t_loaded = time.perf_counter()

    engine.run()
    t_run = time.perf_counter()

    account = engine.portfolio.account(VENUE)
    orders = engine.cache.orders()
    fees = sum(
        (Decimal(str(o.commissions()[0].as_decimal())) for o in orders if o.commissions()),
        Decimal(0),
    )
    result = {
        "peer": "nautilus_trader",
        "version": nautilus_trader.__version__,
        "ticks": len(ticks),
        "import_s": round(t0 - T_START, 3),
        "parse_s": round(t_parsed - t0, 3),
        "setup_s": round(t_loaded - t_parsed, 3),
        "run_s": round(t_run - t_loaded, 3),
        "total_s": round(t_run - T_START, 3),
        "ticks_per_s_run": round(len(ticks) / (t_run - t_loaded)),
        "ticks_per_s_total": round(len(ticks) / (t_run - T_START)),
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "orders": len(orders),
        "orders_filled": sum(1 for o in orders if o.is_closed and o.filled_qty == o.quantity),
        "fills": strategy.fills,  # OrderFilled events (an order can fill in parts against the L1 book)
        "fees_usdt": str(fees),
        "usdt": str(account.balance_total(USDT)),
        "btc": str(account.balance_total(BTC)) if account.balance_total(BTC) is not None else "0",
        "risk_bypass": args.bypass_risk,
    }
    engine.dispose()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
