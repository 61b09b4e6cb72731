// Backtests: upload a trade file or pick recordings, start a job, watch its progress, read its
// report, download the result.

import { api } from "../api.js";
import { lineChart } from "../chart.js";
import { clear, field, h, num, signed, table, time } from "../dom.js";
import { schemaForm } from "../schema_form.js";
import { strategyKinds } from "./new_bot.js";

export async function backtests(main) {
  // Backtests over the API run the built-in kinds (a module: `keel backtest --wasm`).
  const kinds = await strategyKinds(false);
  const listBox = h("div");
  const detail = h("div", { "aria-live": "polite" });
  const file = field("Trade file", { type: "file", name: "file" }, "Keel CSV, a Binance trades dump or a Keel recording. Or leave empty and use recordings below.");
  const recVenue = field("Recorded venue", { name: "data.recorded.venue", value: "sim" });
  const from = field("From (UTC day)", { type: "date", name: "data.recorded.from" });
  const to = field("To (UTC day)", { type: "date", name: "data.recorded.to" });
  const symbol = field("Symbol", { name: "symbol", value: "BTCUSDT" });
  const kind = field("Strategy", { name: "strategy.kind", options: [...kinds.keys()].map((k) => [k]) });
  const quote = field("Starting quote", { name: "starting_quote", inputmode: "decimal", value: "10000" });
  const fee = field("Fee (bps)", { name: "fee_bps", inputmode: "decimal", value: "10" });
  const all = { symbol, "strategy.kind": kind, starting_quote: quote, fee_bps: fee, "data.recorded.venue": recVenue, "data.recorded.from": from, "data.recorded.to": to };
  const paramsBox = h("fieldset");
  let params;
  const showParams = () => { params = schemaForm(kinds.get(kind.input.value).params_schema, "strategy.params"); clear(paramsBox, h("legend", "Parameters"), params.element); };
  kind.input.addEventListener("change", showParams);
  showParams();
  const error = h("div.err", { role: "alert" });
  const submit = h("button.primary", { type: "submit", text: "Start backtest" });
  let timer = null;
  let equity = null;

  async function load() {
    const list = await api("GET", "/backtests");
    clear(listBox, list.items.length ? table(["#Id", "Status", "Progress", "Created", ""], list.items.slice().reverse().map((j) => h("tr",
      h("td.num", j.id), h("td", j.status), h("td", h("progress.progress", { max: 1, value: j.progress, "aria-label": `Job ${j.id} progress` })),
      h("td", time(j.created_ts)), h("td", h("button", { type: "button", text: "Open", onclick: () => show(j.id) }))))) : h("p.help", "No backtests yet."));
  }

  async function show(id) {
    clearTimeout(timer);
    const j = await api("GET", `/backtests/${id}`);
    if (equity) { equity.remove(); equity = null; }
    const equityBox = h("div.chart.small", { role: "img", "aria-label": "Backtest equity curve" });
    const r = j.result;
    const blob = new Blob([JSON.stringify(j, null, 2)], { type: "application/json" });
    const stat = (label, value) => h("div.stat", h("span", label), h("b", value));
    clear(detail, h("h2#job-title", `Backtest ${j.id}: ${j.status}`),
      h("progress.progress", { max: 1, value: j.progress, "aria-label": "Progress" }), h("p.help", `${Math.round(j.progress * 100)}% · ${j.ticks} ticks`),
      j.error ? h("p.err", j.error) : null,
      r ? h("div.stats",
        stat("Net P&L", signed(r.net_pnl)), stat("Realised", signed(r.realized_pnl)), stat("Unrealised", signed(r.unrealized_pnl)),
        stat("Fees", num(r.fees)), stat("Trades", `${r.trade_count} (${Math.round(r.win_rate * 100)}% won)`),
        stat("Max drawdown", `${num(r.max_drawdown)} (${num(r.max_drawdown_pct * 100)}%)`), stat("Fills", r.fill_count), stat("Orders", r.orders),
        stat("Ticks/s", num(r.ticks_per_sec, 0)), stat("Final position", num(r.position?.qty, 4))) : null,
      r && r.equity ? [h("h3", "Equity"), equityBox] : null,
      r && r.fills ? [h("h3", `Trades (${r.fills.length < r.fill_count ? `last ${r.fills.length} of ${r.fill_count}` : r.fill_count})`),
        h("div.scroll", table(["Time", "Side", "#Price", "#Qty", "#Fee"], r.fills.slice().reverse().slice(0, 500).map((f) => h("tr",
          h("td", time(f.ts)), h("td", f.side), h("td.num", num(f.price)), h("td.num", f.qty), h("td.num", num(f.fee))))))] : null,
      h("p", h("a", { href: URL.createObjectURL(blob), download: `backtest-${j.id}.json`, text: "Download result (JSON)" })));
    if (r && r.equity) equity = lineChart(equityBox, r.equity.map((p) => ({ ts: p.ts, value: +p.equity })));
    if (j.status === "queued" || j.status === "running") timer = setTimeout(() => show(id), 500);
    else load();
  }

  const form = h("form.stack", {
    "aria-label": "New backtest",
    onsubmit: async (e) => {
      e.preventDefault();
      for (const f of Object.values(all)) f.error("");
      params.clearErrors();
      error.replaceChildren();
      submit.disabled = true;
      try {
        let data;
        if (file.input.files[0]) {
          const up = await api("POST", "/backtests/uploads", file.input.files[0]);
          data = { upload_id: up.id };
        } else {
          data = { recorded: { venue: recVenue.input.value, from: from.input.value, to: to.input.value } };
        }
        const job = await api("POST", "/backtests", {
          symbol: symbol.input.value, data, strategy: { kind: kind.input.value, params: params.value() },
          starting_quote: quote.input.value, fee_bps: fee.input.value,
        });
        await load();
        show(job.id);
      } catch (err) {
        const rest = params.showErrors(err.details || []).filter((d) => { const f = all[d.field]; if (f) f.error(d.message); return !f; });
        error.append(h("p", err.message), ...rest.map((d) => h("p", `${d.field}: ${d.message}`)));
      } finally { submit.disabled = false; }
    },
  }, file, h("div.row", recVenue, from, to), symbol, kind, paramsBox, h("div.row", quote, fee), error, submit);
  clear(main, h("h1", "Backtests"), h("div.grid2", h("section.panel", h("h2", "Jobs"), listBox, detail), h("section.panel", h("h2", "Start"), form)));
  await load();
  return () => { clearTimeout(timer); if (equity) equity.remove(); };
}
