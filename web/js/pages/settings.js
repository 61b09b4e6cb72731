// Account settings: change password, sign out everywhere, who am I.

import { ApiError, api, dropSession } from "../api.js";
import { clear, field, h } from "../dom.js";

const MISSING = "This Keel does not offer this yet (the API answered 404).";

export async function settings(main) {
  const me = await api("GET", "/me");
  const current = field("Current password", { type: "password", name: "current_password", autocomplete: "current-password", required: true });
  const next = field("New password", { type: "password", name: "new_password", autocomplete: "new-password", required: true, minlength: 8 });
  const pwStatus = h("p", { role: "status", "aria-live": "polite" });
  const pwButton = h("button.primary", { type: "submit", text: "Change password" });
  const pwForm = h("form.stack", {
    "aria-label": "Change password",
    onsubmit: async (e) => {
      e.preventDefault();
      current.error(""); next.error(""); pwStatus.textContent = ""; pwStatus.className = "";
      pwButton.disabled = true;
      try {
        await api("POST", "/me/password", { current_password: current.input.value, new_password: next.input.value });
        pwStatus.textContent = "Password changed. Other sessions were signed out.";
        pwForm.reset();
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) { pwStatus.textContent = MISSING; pwStatus.className = "notice"; return; }
        for (const d of err.details || []) (d.field === "current_password" ? current : next).error(d.message);
        pwStatus.textContent = err.message; pwStatus.className = "err";
      } finally { pwButton.disabled = false; }
    },
  }, current, next, pwStatus, pwButton);

  const allStatus = h("p", { role: "status", "aria-live": "polite" });
  const allButton = h("button.danger", { type: "button", text: "Sign out everywhere", onclick: async () => {
    allStatus.textContent = ""; allStatus.className = "";
    try {
      await api("POST", "/auth/logout-all");
      dropSession();
    } catch (err) {
      allStatus.textContent = err instanceof ApiError && err.status === 404 ? MISSING : err.message;
      allStatus.className = err.status === 404 ? "notice" : "err";
    }
  } });
  clear(main, h("h1", "Settings"),
    h("section.panel", h("h2", "Account"), h("p", `${me.email} · user ${me.id} · since ${new Date(me.created_at).toLocaleDateString()}`)),
    h("section.panel", h("h2", "Change password"), pwForm),
    h("section.panel", h("h2", "Sessions"), h("p.help", "Revokes every refresh token of yours, this one included."), allButton, allStatus));
}
