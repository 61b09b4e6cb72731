// Account settings: change password, limits over all of your bots (`/me/risk`), sign out
// everywhere, who am I.

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

  const riskForm = await limitsForm();

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
    h("section.panel", h("h2", "Limits for all your bots"), riskForm),
    h("section.panel", h("h2", "Sessions"), h("p.help", "Revokes every refresh token of yours, this one included."), allButton, allStatus));
}

/** `GET/PUT /me/risk`: an owner's max leverage and max notional over all their bots. */
async function limitsForm() {
  let limits;
  try { limits = await api("GET", "/me/risk"); } catch (err) {
    if (err instanceof ApiError && err.status === 404) return h("p.notice", MISSING);
    throw err;
  }
  const leverage = field("Max leverage", { name: "max_leverage", type: "number", min: 1, max: 125, step: 1, inputmode: "numeric", value: limits.max_leverage ?? "" },
    "Optional. No bot of yours may be created, edited or started above it.");
  const notional = field("Max notional", { name: "max_notional", inputmode: "decimal", value: limits.max_notional ?? "" },
    "Optional, in quote. Your running bots' positions and open orders together; orders past it are refused (MAX_USER_NOTIONAL).");
  const fields = { max_leverage: leverage, max_notional: notional };
  const status = h("p", { role: "status", "aria-live": "polite" });
  const button = h("button.primary", { type: "submit", text: "Save limits" });
  return h("form.stack", {
    "aria-label": "Limits for all your bots",
    onsubmit: async (e) => {
      e.preventDefault();
      leverage.error(""); notional.error(""); status.textContent = ""; status.className = "";
      const body = {
        max_leverage: leverage.input.value === "" ? null : Number(leverage.input.value),
        max_notional: notional.input.value === "" ? null : notional.input.value,
      };
      button.disabled = true;
      try {
        await api("PUT", "/me/risk", body);
        status.textContent = "Limits saved.";
      } catch (err) {
        for (const d of err.details || []) fields[d.field]?.error(d.message);
        status.textContent = err.message; status.className = "err";
      } finally { button.disabled = false; }
    },
  }, leverage, notional, status, button);
}
