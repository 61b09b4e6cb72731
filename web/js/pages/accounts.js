// Exchange accounts: add (the secret goes to the vault and is never shown again) and remove.

import { api } from "../api.js";
import { clear, field, h, table, time, toast } from "../dom.js";

export async function accounts(main) {
  const listBox = h("div");
  // The venues that take credentials, as the API says (GET /venues lists what each can do).
  const venues = await api("GET", "/venues").catch(() => ({ items: [] }));
  const takesKeys = venues.items.filter((v) => v.capabilities && v.capabilities.credentials);
  const venue = field("Venue", { name: "venue", options: takesKeys.map((v) => [v.venue, v.label || v.venue]) });
  const label = field("Label", { name: "label", required: true, maxlength: 64 });
  const key = field("API key", { name: "api_key", required: true, autocomplete: "off" });
  const secret = field("API secret", { name: "api_secret", type: "password", required: true, autocomplete: "off" }, "Stored encrypted; it is never shown again.");
  const testnet = field("Testnet", { name: "testnet", type: "checkbox" });
  const fields = { venue, label, api_key: key, api_secret: secret, testnet };
  const error = h("p.err", { role: "alert" });
  const submit = h("button.primary", { type: "submit", text: "Add account" });

  async function load() {
    const list = await api("GET", "/exchange-accounts");
    clear(listBox, list.items.length ? table(["Label", "Venue", "Key", "Testnet", "Added", ""], list.items.map((a) => h("tr",
      h("td", a.label), h("td", a.venue), h("td.secret", `…${a.api_key_hint}`), h("td", a.testnet ? "yes" : "no"), h("td", time(a.created_at_ms)),
      h("td", h("button", { type: "button", "aria-label": `Remove ${a.label}`, text: "Remove", onclick: async () => {
        if (!window.confirm(`Remove the account “${a.label}”?`)) return;
        try { await api("DELETE", `/exchange-accounts/${a.id}`); load(); } catch (err) { toast(err.message); }
      } }))))) : h("p.help", "No exchange accounts."));
  }
  const form = h("form.stack", {
    "aria-label": "Add an exchange account",
    onsubmit: async (e) => {
      e.preventDefault();
      for (const f of Object.values(fields)) f.error("");
      error.textContent = "";
      submit.disabled = true;
      try {
        await api("POST", "/exchange-accounts", {
          venue: venue.input.value, label: label.input.value, api_key: key.input.value,
          api_secret: secret.input.value, testnet: testnet.input.checked,
        });
        form.reset();
        load();
      } catch (err) {
        for (const d of err.details || []) (fields[d.field] || { error: () => {} }).error(d.message);
        error.textContent = err.message;
      } finally { secret.input.value = ""; submit.disabled = false; }
    },
  }, venue, label, key, secret, testnet, error, submit);
  clear(main, h("h1", "Exchange accounts"), h("section.panel", listBox), h("section.panel", h("h2", "Add"), form));
  await load();
}
