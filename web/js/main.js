// The dashboard's shell: hash routes, the navigation, the connection indicator, the kill switch.

import { api, auth, logout, resume, signedIn } from "./api.js";
import { clear, h, toast } from "./dom.js";
import * as live from "./live.js";

const routes = {
  login: () => import("./pages/auth.js").then((m) => m.login),
  register: () => import("./pages/auth.js").then((m) => m.register),
  bots: () => import("./pages/bots.js").then((m) => m.bots),
  bot: () => import("./pages/bot.js").then((m) => m.bot),
  "new-bot": () => import("./pages/new_bot.js").then((m) => m.newBot),
  strategies: () => import("./pages/strategies.js").then((m) => m.strategies),
  accounts: () => import("./pages/accounts.js").then((m) => m.accounts),
  backtests: () => import("./pages/backtests.js").then((m) => m.backtests),
  settings: () => import("./pages/settings.js").then((m) => m.settings),
};
const PUBLIC = new Set(["login", "register"]);

const main = document.getElementById("main");
let cleanup = null;
let generation = 0;

export function go(hash) { if (location.hash === hash) render(); else location.hash = hash; }

async function render() {
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/");
  let page = routes[name] ? name : signedIn() ? "bots" : "login";
  if (!signedIn() && !PUBLIC.has(page)) page = "login";
  if (signedIn() && PUBLIC.has(page)) page = "bots";
  if (cleanup) { try { cleanup(); } catch (e) { console.warn(e); } cleanup = null; }
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#/${page}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clear(main, h("p", "Loading…"));
  const mine = ++generation;
  try {
    const view = await (await routes[page]())(main, ...args);
    const stop = typeof view === "function" ? view : null;
    // Another route was rendered while this one loaded: it owns the page now.
    if (mine !== generation) { if (stop) stop(); return; }
    cleanup = stop;
  } catch (e) {
    if (mine === generation) clear(main, h("h1", "Something went wrong"), h("p.err", e.message || String(e)));
  }
  main.focus({ preventScroll: true });
}

function chrome() {
  const inside = signedIn();
  document.getElementById("nav").hidden = !inside;
  document.getElementById("logout").hidden = !inside;
  document.getElementById("kill").hidden = !inside;
}

const conn = document.getElementById("conn");
live.state.addEventListener("change", (e) => {
  conn.textContent = e.detail === "connected" ? "live" : e.detail === "connecting" ? "connecting…" : "";
  conn.className = `conn ${e.detail === "connected" ? "ok" : e.detail === "connecting" ? "down" : ""}`;
});

auth.addEventListener("login", () => { chrome(); live.start(); });
auth.addEventListener("logout", () => { chrome(); live.stop(); go("#/login"); });

document.getElementById("logout").addEventListener("click", async () => { await logout(); });

// Kill switch: a confirmation, then the per-bot result.
const dialog = document.getElementById("confirm");
const result = document.getElementById("kill-result");
const goButton = document.getElementById("kill-go");
document.getElementById("kill").addEventListener("click", () => {
  result.replaceChildren();
  goButton.hidden = false;
  document.getElementById("kill-cancel").textContent = "Cancel";
  dialog.showModal();
  document.getElementById("kill-cancel").focus();
});
goButton.addEventListener("click", async (e) => {
  e.preventDefault();
  goButton.disabled = true;
  try {
    const flatten = document.getElementById("kill-flatten").checked;
    const r = await api("POST", "/kill-switch", { flatten });
    clear(result,
      h("p", `Stopped ${r.bots_stopped} bot(s), canceled ${r.orders_canceled} open order(s).`),
      r.failed.length ? h("p.err", `Did not answer in time (unchanged): bots ${r.failed.join(", ")}`) : h("p", "Every bot answered."));
    goButton.hidden = true;
    document.getElementById("kill-cancel").textContent = "Close";
  } catch (err) {
    clear(result, h("p.err", err.message));
  } finally {
    goButton.disabled = false;
  }
});
dialog.addEventListener("close", () => { if (location.hash.startsWith("#/bot")) render(); });

window.addEventListener("hashchange", render);
window.addEventListener("unhandledrejection", (e) => { toast(e.reason?.message || String(e.reason)); });

(async () => {
  await resume();
  chrome();
  render();
})();
