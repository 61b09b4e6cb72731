// The price chart (TradingView Lightweight Charts, vendored): candles from the candles API then
// live trades, fills as markers, open orders as price lines, indicator series on the price or in
// their own pane. Live updates are coalesced into one redraw per animation frame, so a burst of
// trades costs one paint.

import {
  CandlestickSeries, LineSeries, createChart, createSeriesMarkers,
} from "../vendor/lightweight-charts/lightweight-charts.standalone.production.mjs";

const COLORS = ["#f0b429", "#b388ff", "#4dd0e1", "#ff8a65"];
const BASE = {
  autoSize: true,
  // The logo injects an inline <style>, which the CSP forbids: attribution is in the footer.
  layout: { background: { color: "#171d24" }, textColor: "#c9d1d9", attributionLogo: false, panes: { separatorColor: "#2a323c" } },
  grid: { vertLines: { color: "#222a33" }, horzLines: { color: "#222a33" } },
  timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#2a323c", barSpacing: 10, rightOffset: 4 },
  rightPriceScale: { borderColor: "#2a323c" },
};

const sec = (ms) => Math.floor(ms / 1000);

/** Counters the browser test reads: trades applied, frames drawn, worst trade-to-paint delay. */
export const stats = { trades: 0, frames: 0, maxLagMs: 0, lastPrice: null, lastTradeId: null };
window.__keelChartStats = stats;

export class PriceChart {
  constructor(container, intervalSec = 60) {
    this.interval = intervalSec;
    this.chart = createChart(container, BASE);
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    });
    this.markers = createSeriesMarkers(this.candles, []);
    this.markerList = [];
    this.orderLines = new Map();
    this.indicators = new Map(); // name -> {series | line, meta}
    this.last = null;
    this.pending = false;
    this.oldestPending = 0;
  }

  setHistory(items) {
    const data = items.map((c) => ({
      time: sec(c.open_time), open: +c.open, high: +c.high, low: +c.low, close: +c.close,
    }));
    this.candles.setData(data);
    this.last = data.length ? { ...data[data.length - 1] } : null;
  }

  /** A live trade: folded into the current candle; drawn on the next frame. */
  trade(priceStr, tsMs, tradeId) {
    if (this.disposed) return;
    const price = +priceStr;
    const t = Math.floor(sec(tsMs) / this.interval) * this.interval;
    if (!this.last || t > this.last.time) {
      if (this.last) this.candles.update(this.last);
      this.last = { time: t, open: price, high: price, low: price, close: price };
    } else if (t === this.last.time) {
      this.last.high = Math.max(this.last.high, price);
      this.last.low = Math.min(this.last.low, price);
      this.last.close = price;
    }
    stats.trades++;
    stats.lastPrice = price;
    if (tradeId !== undefined) stats.lastTradeId = tradeId;
    if (!this.pending) {
      this.pending = true;
      this.oldestPending = performance.now();
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.pending = false;
    if (this.disposed) return;
    if (this.last) this.candles.update(this.last);
    stats.frames++;
    stats.maxLagMs = Math.max(stats.maxLagMs, performance.now() - this.oldestPending);
  }

  setFills(fills) {
    this.markerList = fills.slice(-500).map((f) => this.fillMarker(f));
    this.markers.setMarkers(this.markerList);
  }

  addFill(f) {
    this.markerList.push(this.fillMarker(f));
    if (this.markerList.length > 500) this.markerList.shift();
    this.markers.setMarkers(this.markerList);
  }

  fillMarker(f) {
    const buy = f.side === "buy";
    const t = Math.floor(sec(f.ts) / this.interval) * this.interval;
    return {
      time: t, position: buy ? "belowBar" : "aboveBar", color: buy ? "#26a69a" : "#ef5350",
      shape: buy ? "arrowUp" : "arrowDown", text: buy ? "B" : "S",
    };
  }

  /** Open orders as horizontal price lines (limit and stop prices). */
  setOrders(orders) {
    const keep = new Set();
    for (const o of orders) {
      const price = o.price ?? o.stop_price ?? o.trigger_price;
      if (price === undefined || price === null) continue;
      keep.add(o.id);
      const title = `#${o.id} ${o.side} ${o.qty}`;
      const existing = this.orderLines.get(o.id);
      if (existing) { existing.applyOptions({ price: +price, title }); continue; }
      this.orderLines.set(o.id, this.candles.createPriceLine({
        price: +price, color: o.side === "buy" ? "#26a69a" : "#ef5350", lineStyle: 2, lineWidth: 1, axisLabelVisible: true, title,
      }));
    }
    for (const [id, line] of this.orderLines) {
      if (!keep.has(id)) { this.candles.removePriceLine(line); this.orderLines.delete(id); }
    }
  }

  /** Indicator series per docs/WEBSOCKET.md: `price`/`own` pane, `line`/`level` style. */
  setIndicators(series) {
    for (const s of series) this.ensureIndicator(s);
    for (const s of series) {
      const ind = this.indicators.get(s.name);
      if (s.style === "level") {
        const last = s.points[s.points.length - 1];
        if (last) this.indicatorValue(s.name, last.ts, last.value);
      } else {
        const seen = new Map();
        for (const p of s.points) seen.set(sec(p.ts), +p.value);
        ind.series.setData([...seen].map(([time, value]) => ({ time, value })));
      }
    }
  }

  ensureIndicator(meta) {
    if (this.indicators.has(meta.name)) return this.indicators.get(meta.name);
    const color = COLORS[this.indicators.size % COLORS.length];
    let entry;
    if (meta.style === "level") {
      entry = { meta, color, line: null };
    } else {
      const pane = meta.pane === "own" ? this.ownPane() : 0;
      const series = this.chart.addSeries(LineSeries, {
        color, lineWidth: 2, priceLineVisible: false, lastValueVisible: true, title: meta.name,
        autoscaleInfoProvider: meta.min !== null && meta.min !== undefined && meta.max !== null && meta.max !== undefined
          ? () => ({ priceRange: { minValue: +meta.min, maxValue: +meta.max } }) : undefined,
      }, pane);
      entry = { meta, color, series };
    }
    this.indicators.set(meta.name, entry);
    return entry;
  }

  ownPane() {
    if (this.ownPaneIndex === undefined) {
      this.ownPaneIndex = 1;
      queueMicrotask(() => {
        if (this.disposed) return;
        const panes = this.chart.panes();
        if (panes[1]) panes[1].setHeight(110);
      });
    }
    return this.ownPaneIndex;
  }

  indicatorValue(name, ts, value) {
    const ind = this.indicators.get(name) || this.ensureIndicator({ name, pane: "price", style: "line" });
    if (ind.meta.style === "level") {
      if (ind.line) ind.line.applyOptions({ price: +value });
      else ind.line = this.candles.createPriceLine({ price: +value, color: ind.color, lineWidth: 1, lineStyle: 1, axisLabelVisible: false, title: name });
    } else {
      ind.series.update({ time: sec(ts), value: +value });
    }
  }

  legend() { return [...this.indicators.values()].map((i, n) => ({ name: i.meta.name, cls: `c${n % COLORS.length}` })); }

  remove() { this.disposed = true; this.chart.remove(); }
}

/** A small line chart (equity curves). */
export function lineChart(container, points) {
  const chart = createChart(container, { ...BASE, timeScale: { ...BASE.timeScale, secondsVisible: true } });
  const series = chart.addSeries(LineSeries, { color: "#4c9bff", lineWidth: 2, priceLineVisible: false });
  const set = (pts) => {
    const seen = new Map();
    for (const p of pts) seen.set(sec(p.ts), p.value);
    series.setData([...seen].map(([time, value]) => ({ time, value })));
  };
  set(points);
  let disposed = false;
  return {
    chart, series,
    set: (pts) => { if (!disposed) set(pts); },
    remove: () => { disposed = true; chart.remove(); },
  };
}
