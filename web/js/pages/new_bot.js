// Create bot: the strategy's params form is generated from its JSON Schema, as `GET /strategies`
// lists it for the built-in kinds and the caller's uploaded modules alike; leverage and margin
// type are offered only on a venue whose capabilities (`GET /venues`) have leverage; the API's
// validation errors are shown beside their fields.

import { api } from "../api.js";
import { clear, field, h } from "../dom.js";
import { go } from "../main.js";
import { schemaForm } from "../schema_form.js";

/**
 * Strategy kinds with their params schema, from `GET /strategies`: the built-ins (keyed by kind)
 * and, with `modules`, the caller's uploaded modules (keyed `wasm:<id>`, with `module_id`).
 */
export async function strategyKinds(modules = true) {
  const kinds = new Map();
  const listed = await api("GET", "/strategies");
  for (const s of listed.items) {
    if (s.builtin) kinds.set(s.kind, { ...s, label: s.kind });
    else if (modules) kinds.set(`wasm:${s.module.id}`, { ...s, label: `${s.name} (module ${s.module.id})`, module_id: s.module.id });
  }
  return kinds;
}

export async function newBot(main) {
  const [kinds, venues, accounts] = await Promise.all([
    strategyKinds(), api("GET", "/venues"), api("GET", "/exchange-accounts").catch(() => ({ items: [] })),
  ]);
  const all = {};
  const name = all.name = field("Name", { name: "name", required: true, maxlength: 64, value: "my bot" });
  const venue = all.venue = field("Venue", { name: "venue", options: venues.items.filter((v) => v.enabled !== false).map((v) => [v.venue, v.label || v.venue]) });
  const symbol = all.symbol = field("Symbol", { name: "symbol", required: true, value: "BTCUSDT", pattern: "[A-Za-z0-9]{2,20}", autocapitalize: "characters" });
  const leverage = all.leverage = field("Leverage", { name: "leverage", type: "number", min: 1, max: 125, step: 1, inputmode: "numeric", value: "1" },
    "1 to 125, within your own and the server's limits; set at the venue before the first order.");
  const marginType = all.margin_type = field("Margin type", { name: "margin_type", options: [["isolated", "Isolated"], ["cross", "Cross"]] });
  const derivatives = h("fieldset", { "data-testid": "derivatives" }, h("legend", "Leverage"), h("div.row", leverage, marginType));
  const hasLeverage = (id) => venues.items.some((v) => v.venue === id && v.capabilities?.leverage);
  const syncVenue = () => { derivatives.hidden = !hasLeverage(venue.input.value); };
  venue.input.addEventListener("change", syncVenue);
  syncVenue();
  const mode = all.mode = field("Mode", { name: "mode", options: [["paper", "Paper (simulated fills)"], ["live", "Live (real orders)"]] });
  const account = all.exchange_account_id = field("Exchange account", {
    name: "exchange_account_id", options: [["", "—"], ...accounts.items.map((a) => [String(a.id), `${a.label} (${a.venue}, …${a.api_key_hint})`])],
  }, "Live bots trade with one of your exchange accounts.");
  const kind = all["strategy.kind"] = field("Strategy", { name: "strategy.kind", options: [...kinds].map(([key, k]) => [key, k.label]) });
  const start = all["paper.starting_quote"] = field("Starting quote", { name: "paper.starting_quote", inputmode: "decimal", value: "10000" });
  const fee = all["paper.fee_bps"] = field("Fee (bps)", { name: "paper.fee_bps", inputmode: "decimal", value: "10" });
  const riskFields = {};
  for (const [key, label] of [["max_order_notional", "Max order notional"], ["max_position", "Max position"], ["max_daily_loss", "Max daily loss"], ["max_open_orders", "Max open orders"]]) {
    riskFields[key] = all[`risk.${key}`] = field(label, { name: `risk.${key}`, inputmode: "decimal" }, "Optional.");
  }
  const description = h("p.help", { "aria-live": "polite" });
  const paramsBox = h("fieldset", h("legend", "Strategy parameters"));
  let params = null;
  const showParams = () => {
    const k = kinds.get(kind.input.value);
    params = schemaForm(k.params_schema, "strategy.params");
    description.textContent = k.description || "";
    clear(paramsBox, h("legend", `${k.label} parameters`), params.element);
  };
  kind.input.addEventListener("change", showParams);
  showParams();
  const syncMode = () => { account.hidden = mode.input.value !== "live"; };
  mode.input.addEventListener("change", syncMode);
  syncMode();

  const error = h("div.err", { role: "alert" });
  const submit = h("button.primary", { type: "submit", text: "Create bot" });
  const form = h("form.stack", {
    "aria-label": "New bot",
    onsubmit: async (e) => {
      e.preventDefault();
      for (const f of Object.values(all)) f.error("");
      params.clearErrors();
      error.replaceChildren();
      const chosen = kinds.get(kind.input.value);
      const strategy = { kind: chosen.kind, params: params.value() };
      if (chosen.module_id !== undefined) strategy.module_id = chosen.module_id;
      const body = {
        name: name.input.value, venue: venue.input.value, symbol: symbol.input.value, mode: mode.input.value,
        strategy,
        paper: { starting_quote: start.input.value, fee_bps: fee.input.value },
      };
      if (body.mode === "live" && account.input.value) body.exchange_account_id = Number(account.input.value);
      if (!derivatives.hidden) {
        body.leverage = Number(leverage.input.value);
        body.margin_type = marginType.input.value;
      }
      const risk = {};
      for (const [key, f] of Object.entries(riskFields)) {
        if (f.input.value !== "") risk[key] = key === "max_open_orders" ? Number(f.input.value) : f.input.value;
      }
      if (Object.keys(risk).length) body.risk = risk;
      submit.disabled = true;
      try {
        const made = await api("POST", "/bots", body);
        go(`#/bot/${made.id}`);
      } catch (err) {
        const rest = params.showErrors(err.details || []).filter((d) => {
          const f = all[d.field];
          if (f) f.error(d.message);
          return !f;
        });
        error.append(h("p", err.message), ...rest.map((d) => h("p", `${d.field}: ${d.message}`)));
        const invalid = form.querySelector('[aria-invalid="true"]');
        if (invalid) invalid.focus();
      } finally { submit.disabled = false; }
    },
  },
  h("fieldset", h("legend", "Bot"), name, h("div.row", venue, symbol), mode, account), derivatives,
  h("fieldset", h("legend", "Strategy"), kind, description), paramsBox,
  h("fieldset", h("legend", "Paper account"), start, fee),
  h("fieldset", h("legend", "Risk limits"), ...Object.values(riskFields)),
  error, submit);
  clear(main, h("h1", "New bot"), form);
  name.input.focus();
}
