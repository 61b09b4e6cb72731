// Bot detail: live price chart (candles, then trades), indicators, fills as markers, open orders
// as lines; controls; position and P&L (with, on a venue with leverage, the venue's own view of
// the position and the funding booked); open orders with cancel; a manual order form; the
// journal; the equity curve.

import { ApiError, allPages, api } from "../api.js";
import { PriceChart, lineChart } from "../chart.js";
import { badge, clear, field, h, num, signed, table, time, toast } from "../dom.js";
import { subscribe } from "../live.js";

const OPEN = new Set(["new", "accepted", "partially_filled"]);
const ACTIONS = { created: ["start"], stopped: ["start"], failed: ["start"], running: ["pause", "stop"], paused: ["resume", "stop"] };

/** Equity after each fill, replayed from the paper account's start. */
function equityCurve(bot, fills) {
  let quote = Number(bot.paper?.starting_quote ?? 0);
  let qty = 0;
  const pts = bot.created_ts ? [{ ts: bot.created_ts, value: quote }] : [];
  for (const f of fills) {
    const p = +f.price, q = +f.qty, fee = +f.fee;
    if (f.side === "buy") { quote -= p * q + fee; qty += q; } else { quote += p * q - fee; qty -= q; }
    pts.push({ ts: f.ts, value: quote + qty * p });
  }
  return pts;
}

export async function bot(main, idText) {
  const id = Number(idText);
  let record = await api("GET", `/bots/${id}`);
  const [fills, orders, events, candles] = await Promise.all([
    allPages(`/bots/${id}/fills`), allPages(`/bots/${id}/orders`), allPages(`/bots/${id}/events`),
    api("GET", `/markets/${record.venue}/${record.symbol}/candles?interval=1m&limit=300`),
  ]);
  const ordersById = new Map(orders.map((o) => [o.id, o]));
  const eventList = events.slice(-200);
  let indicatorsAvailable = false;

  // --- layout
  const status = h("span");
  const controls = h("div.row", { role: "group", "aria-label": "Bot controls" });
  const stats = h("div.stats", { "aria-live": "polite" });
  const chartBox = h("div.chart", { role: "img", "aria-label": `Price chart of ${record.symbol} with fills and open orders` });
  const legend = h("div.legend");
  const ordersBox = h("div");
  const eventsList = h("ul.events", { "aria-label": "Bot events" });
  const equityBox = h("div.chart.small", { role: "img", "aria-label": "Equity curve" });
  const orderForm = manualOrderForm(id, () => refreshPosition());
  clear(main,
    h("div.row", h("h1", record.name), status),
    h("p.help", `${record.venue} · ${record.symbol} · ${record.mode}${record.leverage ? ` · ${record.leverage}x ${record.margin_type || ""}` : ""} · ${record.strategy.kind} ${JSON.stringify(record.strategy.params)}`),
    controls,
    h("div.grid2",
      h("div", h("section.panel", { "aria-label": "Price" }, legend, chartBox), h("section.panel", h("h2", "Equity"), equityBox)),
      h("div", h("section.panel", h("h2", "Position"), stats), h("section.panel", h("h2", "Manual order"), orderForm))),
    h("section.panel", h("h2", "Open orders"), ordersBox),
    h("section.panel", h("h2", "Events"), eventsList));

  // --- chart
  const chart = new PriceChart(chartBox);
  chart.setHistory(candles.items);
  chart.setFills(fills);
  const equity = lineChart(equityBox, equityCurve(record, fills));
  try {
    const ind = await api("GET", `/bots/${id}/indicators?limit=2000`);
    indicatorsAvailable = true;
    chart.setIndicators(ind.series || []);
  } catch (e) {
    if (!(e instanceof ApiError && (e.status === 404 || e.status === 405))) throw e;
  }
  const drawLegend = () => clear(legend, chart.legend().map((l) => h("span", h("i", { class: l.cls }), l.name)),
    indicatorsAvailable ? null : h("span", "indicators: not published by this Keel"));
  drawLegend();

  // --- panels
  function drawStatus() {
    clear(status, badge(record.status), record.status_reason ? h("span.help", ` ${record.status_reason}`) : null);
    clear(controls, (ACTIONS[record.status] || []).map((a) => h("button", {
      type: "button", class: a === "start" || a === "resume" ? "primary" : a === "stop" ? "danger" : null, "data-action": a,
      text: a[0].toUpperCase() + a.slice(1),
      onclick: async (e) => {
        e.target.disabled = true;
        try { record = await api("POST", `/bots/${id}/${a}`); drawStatus(); } catch (err) { toast(err.message); e.target.disabled = false; }
      },
    })), h("button", { type: "button", text: "Close position", onclick: async () => {
      try { await api("POST", `/bots/${id}/close-position`); refreshPosition(); } catch (err) { toast(err.message); }
    } }));
  }
  function drawOrders() {
    const open = [...ordersById.values()].filter((o) => OPEN.has(o.status)).sort((a, b) => a.id - b.id);
    chart.setOrders(open);
    clear(ordersBox, open.length ? table(["#Id", "Side", "Type", "#Price", "#Qty", "#Filled", "Status", ""], open.map((o) => h("tr", { "data-order": o.id },
      h("td.num", o.id), h("td", o.side), h("td", o.type), h("td.num", num(o.price ?? o.stop_price)),
      h("td.num", o.qty), h("td.num", o.filled_qty), h("td", o.status),
      h("td", h("button", { type: "button", "aria-label": `Cancel order ${o.id}`, text: "Cancel", onclick: async (e) => {
        e.target.disabled = true;
        try { const c = await api("DELETE", `/bots/${id}/orders/${o.id}`); if (c && c.id) ordersById.set(c.id, c); drawOrders(); }
        catch (err) { toast(err.message); e.target.disabled = false; }
      } }))))) : h("p.help", "No open orders."));
  }
  let position = null;
  let perf = null;
  function drawStats() {
    const s = (label, value) => h("div.stat", h("span", label), h("b", value));
    clear(stats,
      s("Position", position ? num(position.qty, 3) : "–"),
      s("Avg entry", position ? num(position.avg_entry_price) : "–"),
      s("Mark", position ? num(position.mark_price) : "–"),
      s("Realised P&L", position ? signed(position.realized_pnl) : "–"),
      s("Unrealised P&L", position ? signed(position.unrealized_pnl) : "–"),
      s("Fees", position ? num(position.fees) : "–"),
      s("Quote balance", position ? num(position.quote_balance) : "–"),
      h("div.stat", { "data-testid": "pnl" }, h("span", "Net P&L"), h("b", perf ? signed(perf.net_pnl) : "–")),
      s("Trades", perf ? `${perf.trade_count} (${Math.round(perf.win_rate * 100)}% won)` : "–"),
      s("Max drawdown", perf ? num(perf.max_drawdown) : "–"),
      h("div.stat", { "data-testid": "fills" }, h("span", "Fills"), h("b", String(fills.length))),
      derivativesStats(record, position));
  }
  async function refreshPosition() {
    try {
      [position, perf] = await Promise.all([api("GET", `/bots/${id}/position`), api("GET", `/bots/${id}/performance`)]);
      drawStats();
    } catch { /* next tick */ }
  }
  function eventLine(e) {
    const d = e.data || {};
    const what = e.kind === "fill" ? `${d.side} ${d.qty} @ ${d.price} (fee ${d.fee})`
      : e.kind === "order" ? `#${d.id} ${d.side} ${d.type} ${d.qty}${d.price ? " @ " + d.price : ""} → ${d.status}${d.reason ? " (" + d.reason + ")" : ""}`
      : e.kind === "status" ? `${d.status}${d.reason ? " — " + d.reason : ""}`
      : e.kind === "position" ? `qty ${d.qty}, avg ${d.avg_entry_price}, realised ${d.realized_pnl}`
      : e.kind === "log" ? `[${d.level}] ${d.message}` : JSON.stringify(d);
    return h("li", { "data-kind": e.kind }, `${new Date(e.ts).toLocaleTimeString()} ${e.kind}: ${what}`);
  }
  function drawEvents() { clear(eventsList, eventList.slice().reverse().map(eventLine)); }

  drawStatus(); drawOrders(); drawEvents(); await refreshPosition();

  // --- live
  let lastSeq = events.length ? events[events.length - 1].id : 0;
  function onBotEvent(e) {
    if (e.kind === "indicator") {
      for (const [name, value] of Object.entries(e.values || {})) chart.indicatorValue(name, e.ts, value);
      if (legend.childElementCount !== chart.indicators.size) { indicatorsAvailable = true; drawLegend(); }
      return;
    }
    if (e.id && e.id <= lastSeq) return;
    if (e.id) lastSeq = e.id;
    eventList.push(e);
    if (eventList.length > 200) eventList.shift();
    drawEvents();
    if (e.kind === "fill") {
      fills.push(e.data);
      chart.addFill(e.data);
      equity.set(equityCurve(record, fills));
      refreshPosition();
    } else if (e.kind === "order") {
      ordersById.set(e.data.id, e.data);
      drawOrders();
    } else if (e.kind === "status") {
      record = { ...record, status: e.data.status, status_reason: e.data.reason };
      drawStatus();
    } else if (e.kind === "position") {
      position = { ...(position || {}), ...e.data };
      drawStats();
    }
  }
  async function resync() {
    try {
      const missed = await allPages(`/bots/${id}/events`, 5, lastSeq);
      for (const e of missed) onBotEvent(e);
      record = await api("GET", `/bots/${id}`);
      drawStatus();
    } catch { /* the next resync */ }
  }
  const stopBot = subscribe(`bot:${id}`, onBotEvent, resync);
  const stopTrades = subscribe(`market:${record.venue}:${record.symbol}:trades`, (t) => {
    if (t.kind === "trade") chart.trade(t.price, t.exchange_ts, t.trade_id);
  });
  const markTimer = setInterval(refreshPosition, 3000);
  return () => { stopBot(); stopTrades(); clearInterval(markTimer); chart.remove(); equity.remove(); };
}

/**
 * What a bot on a venue with leverage adds to its position panel: the funding booked, paper
 * futures' margin and liquidation price, and a live bot's position as the venue reports it
 * (`venue` in `GET /bots/{id}/position`). Nothing for a spot bot.
 */
function derivativesStats(record, position) {
  if (!position) return null;
  const s = (label, value, testid) => h("div.stat", { "data-testid": testid }, h("span", label), h("b", value));
  const funding = record.leverage || Number(position.funding) !== 0;
  const out = [];
  if (funding) out.push(s("Funding", signed(position.funding), "funding"));
  if (position.margin !== undefined) out.push(s("Margin", num(position.margin)));
  if (position.liquidation_price !== undefined) out.push(s("Liquidation", num(position.liquidation_price), "liquidation"));
  const v = position.venue;
  if (v) {
    out.push(h("h3.stat-head", { "data-testid": "venue-position" }, "At the venue"),
      s("Venue qty", num(v.qty, 3)),
      s("Entry", num(v.entry_price)),
      s("Venue mark", num(v.mark_price)),
      s("Liquidation", num(v.liquidation_price), "venue-liquidation"),
      s("Venue unrealised P&L", signed(v.unrealized_pnl)),
      s("Leverage", v.leverage ? `${v.leverage}x ${v.margin_type || ""}` : "–"));
  }
  return out;
}

function manualOrderForm(id, after) {
  const side = field("Side", { name: "side", options: [["buy", "Buy"], ["sell", "Sell"]] });
  const type = field("Type", { name: "type", options: [["market", "Market"], ["limit", "Limit"], ["stop", "Stop"]] });
  const qty = field("Quantity", { name: "qty", inputmode: "decimal", required: true, value: "0.001" });
  const price = field("Price", { name: "price", inputmode: "decimal" }, "Limit price, or the stop's trigger price.");
  const error = h("p.err", { role: "alert" });
  const submit = h("button.primary", { type: "submit", text: "Place order" });
  const fields = { side, type, qty, price, stop_price: price };
  const sync = () => { price.hidden = type.input.value === "market"; };
  type.input.addEventListener("change", sync);
  sync();
  return h("form.stack", {
    "aria-label": "Manual order",
    onsubmit: async (e) => {
      e.preventDefault();
      for (const f of [side, type, qty, price]) f.error("");
      error.textContent = "";
      const body = { side: side.input.value, type: type.input.value, qty: qty.input.value };
      if (body.type === "limit") body.price = price.input.value;
      if (body.type === "stop") body.stop_price = price.input.value;
      submit.disabled = true;
      try {
        await api("POST", `/bots/${id}/orders`, body);
        after();
      } catch (err) {
        const rest = (err.details || []).filter((d) => {
          const f = fields[d.field.replace(/^body\./, "")];
          if (f) f.error(d.message);
          return !f;
        });
        error.textContent = [err.message, ...rest.map((d) => `${d.field}: ${d.message}`)].join(" · ");
      } finally { submit.disabled = false; }
    },
  }, h("div.row", side, type), qty, price, error, submit);
}
