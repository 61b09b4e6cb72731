// Strategies: upload a WebAssembly module, list modules, delete one (`/api/v1/strategies`).

import { ApiError, api } from "../api.js";
import { clear, field, h, table, time, toast } from "../dom.js";

export async function strategies(main) {
  const listBox = h("div");
  const file = field("Module (.wasm)", { type: "file", name: "module", accept: ".wasm,application/wasm", required: true });
  const name = field("Name", { name: "name", required: true, pattern: "[a-z][a-z0-9_]{0,39}" }, "Lower case, digits and _; the bot's strategy kind.");
  const error = h("p.err", { role: "alert" });
  const submit = h("button.primary", { type: "submit", text: "Upload" });
  let available = true;

  async function load() {
    let list;
    try {
      list = await api("GET", "/strategies");
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        available = false;
        clear(listBox, h("p.notice", "This Keel has no strategy modules API yet (GET /api/v1/strategies answered 404). Built-in strategies are available in New bot."));
        return;
      }
      throw e;
    }
    const items = Array.isArray(list) ? list : (list && list.items) || [];
    clear(listBox, items.length ? table(["Name", "Kind", "Size", "Uploaded", ""], items.map((s) => h("tr",
      h("td", String(s.name ?? s.kind ?? s.id)), h("td", s.builtin ? "built-in" : "module"),
      h("td", s.bytes ? `${Math.round(s.bytes / 1024)} KiB` : "–"), h("td", time(s.created_ts ?? s.uploaded_ts)),
      h("td", s.builtin ? "" : h("button", { type: "button", "aria-label": `Delete ${s.name ?? s.id}`, text: "Delete", onclick: async () => {
        try { await api("DELETE", `/strategies/${encodeURIComponent(s.id ?? s.name)}`); load(); } catch (err) { toast(err.message); }
      } }))))) : h("p.help", "No modules uploaded."));
  }

  const form = h("form.stack", {
    "aria-label": "Upload a strategy module",
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      name.error(""); file.error("");
      const f = file.input.files[0];
      if (!f) { file.error("choose a .wasm file"); return; }
      submit.disabled = true;
      try {
        await api("POST", `/strategies?name=${encodeURIComponent(name.input.value)}`, f, { "content-type": "application/wasm" });
        form.reset();
        load();
      } catch (err) {
        for (const d of err.details || []) (d.field === "name" ? name : file).error(d.message);
        error.textContent = err.status === 404 ? "This Keel cannot take strategy modules yet (404)." : err.message;
      } finally { submit.disabled = false; }
    },
  }, name, file, error, submit);
  clear(main, h("h1", "Strategies"), h("section.panel", h("h2", "Modules"), listBox), h("section.panel", h("h2", "Upload"), form));
  await load();
  if (!available) submit.disabled = true;
}
