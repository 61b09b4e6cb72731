// Bots list: status, venue and symbol, position, realised and unrealised P&L, last fill, each kept
// live from the `account` channel (fills, positions, status changes).

import { api } from "../api.js";
import { badge, clear, h, num, signed, table, time } from "../dom.js";
import { subscribe } from "../live.js";

export async function bots(main) {
  const rows = new Map(); // id -> {bot, pos, lastFill}
  const [list, portfolio] = await Promise.all([api("GET", "/bots"), api("GET", "/portfolio")]);
  for (const bot of list.items) rows.set(bot.id, { bot, pos: null, lastFill: null });
  for (const p of portfolio.items) if (rows.has(p.bot_id)) rows.get(p.bot_id).pos = p;
  const body = h("tbody");
  const cards = h("div.cards");
  const tableEl = table(["Bot", "Status", "Venue · symbol", "#Position", "#Realised P&L", "#Unrealised P&L", "Last fill"], [], "bots");
  tableEl.querySelector("tbody").replaceWith(body);
  const summary = h("p.help");

  function draw() {
    const items = [...rows.values()].sort((a, b) => b.bot.id - a.bot.id);
    clear(body, items.map(({ bot, pos, lastFill }) => h("tr", { "data-bot": bot.id },
      h("td", h("a", { href: `#/bot/${bot.id}`, text: bot.name })),
      h("td", badge(bot.status), bot.status_reason ? h("span.help", ` ${bot.status_reason}`) : null),
      h("td", `${bot.venue} · ${bot.symbol} · ${bot.mode}`),
      h("td.num", pos ? num(pos.qty, 3) : "–"),
      h("td.num", pos ? signed(pos.realized_pnl) : "–"),
      h("td.num", pos ? signed(pos.unrealized_pnl) : "–"),
      h("td", lastFill ? `${lastFill.side} ${lastFill.qty} @ ${num(lastFill.price)} · ${time(lastFill.ts)}` : "–"))));
    clear(cards, items.map(({ bot, pos, lastFill }) => h("article.card", { "data-bot": bot.id },
      h("header", h("a", { href: `#/bot/${bot.id}`, text: bot.name }), badge(bot.status)),
      h("div.kv", "Market", h("b", `${bot.venue} · ${bot.symbol}`)),
      h("div.kv", "Position", h("b", pos ? num(pos.qty, 3) : "–")),
      h("div.kv", "Realised", h("b", pos ? signed(pos.realized_pnl) : "–")),
      h("div.kv", "Unrealised", h("b", pos ? signed(pos.unrealized_pnl) : "–")),
      h("div.kv", "Last fill", h("b", lastFill ? `${lastFill.side} @ ${num(lastFill.price)}` : "–")))));
    summary.textContent = `${items.length} bot(s) · updated ${new Date().toLocaleTimeString()}`;
  }

  clear(main,
    h("div.row", h("h1", "Bots"), h("a", { href: "#/new-bot", text: "+ New bot" })),
    rows.size ? null : h("p", "No bots yet. ", h("a", { href: "#/new-bot", text: "Create one" }), "."),
    tableEl, cards, summary);
  draw();

  // Marks move every trade: positions are refreshed from the portfolio at most every 2 s.
  let refreshTimer = null;
  const refreshSoon = () => {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        const [l, p] = await Promise.all([api("GET", "/bots"), api("GET", "/portfolio")]);
        for (const bot of l.items) rows.set(bot.id, { ...(rows.get(bot.id) || { pos: null, lastFill: null }), bot });
        for (const item of p.items) if (rows.has(item.bot_id)) rows.get(item.bot_id).pos = item;
        draw();
      } catch { /* shown by the next attempt */ }
    }, 500);
  };
  const poll = setInterval(refreshSoon, 2000);
  // One `bot:{id}` channel per bot (the `account` channel's frames do not name the bot).
  const stops = [...rows.keys()].slice(0, 90).map((id) => subscribe(`bot:${id}`, (event) => {
    const row = rows.get(id);
    if (event.kind === "fill") row.lastFill = event.data;
    if (event.kind === "status") { row.bot.status = event.data.status; row.bot.status_reason = event.data.reason; }
    if (event.kind === "position" && row.pos) Object.assign(row.pos, event.data);
    draw();
    if (event.kind !== "indicator") refreshSoon();
  }, refreshSoon));
  // Last fills, newest page only (fills are paged oldest first; the count tells where the end is).
  for (const [id, row] of rows) {
    if (!row.pos || row.pos.fills_through === 0) continue;
    const after = Math.max(0, row.pos.fills_through - 1);
    api("GET", `/bots/${id}/fills?after=${after}&limit=1`).then((page) => {
      if (page.items.length && !row.lastFill) { row.lastFill = page.items[0]; draw(); }
    }).catch(() => {});
  }
  return () => { stops.forEach((f) => f()); clearInterval(poll); clearTimeout(refreshTimer); };
}
