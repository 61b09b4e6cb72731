// Strategies: the built-in kinds and your uploaded WebAssembly modules (`/api/v1/strategies`);
// upload a module (the file's bytes, `Content-Type: application/wasm`), delete one. The API's
// errors (a refused module says what is wrong) are shown as they come.

import { api } from "../api.js";
import { clear, field, h, table, toast } from "../dom.js";

const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;

export async function strategies(main) {
  const listBox = h("div");
  const file = field("Module (.wasm)", { type: "file", name: "module", accept: ".wasm,application/wasm", required: true });
  const name = field("Name", { name: "name", required: true, maxlength: 64 }, "Your name for it, shown in New bot.");
  const error = h("p.err", { role: "alert" });
  const submit = h("button.primary", { type: "submit", text: "Upload" });

  async function load() {
    const list = await api("GET", "/strategies");
    const rows = list.items.map((s) => {
      const m = s.module;
      const remove = m ? h("button", { type: "button", "aria-label": `Delete ${s.name}`, text: "Delete", onclick: async () => {
        try { await api("DELETE", `/strategies/${m.id}`); await load(); } catch (err) { toast(err.message); }
      } }) : "";
      return h("tr", { "data-module": m ? String(m.id) : "" },
        h("td", s.name), h("td", m ? `module ${m.id}` : "built-in"),
        h("td", m ? kib(m.size) : "–"), h("td", m ? m.created_at.replace("T", " ").replace("Z", " UTC") : "–"),
        h("td", { title: m ? m.sha256 : "" }, m ? m.sha256.slice(0, 12) : "–"), h("td", remove));
    });
    clear(listBox, table(["Name", "Kind", "Size", "Uploaded", "SHA-256", ""], rows));
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
        await load();
      } catch (err) {
        for (const d of err.details || []) (d.field === "name" ? name : file).error(d.message);
        error.textContent = err.message;
      } finally { submit.disabled = false; }
    },
  }, name, file, error, submit);
  clear(main, h("h1", "Strategies"), h("section.panel", h("h2", "Strategies"), listBox), h("section.panel", h("h2", "Upload a module"), form),
    h("p.help", "A module is a WebAssembly strategy speaking Keel's ABI (docs/STRATEGY_ABI.md); a bot runs it with the kind shown here."));
  await load();
}
