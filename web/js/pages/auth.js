import { login as signIn, register as signUp } from "../api.js";
import { clear, field, h } from "../dom.js";
import { go } from "../main.js";

function form(main, title, submitText, action, other) {
  const email = field("Email", { type: "email", name: "email", autocomplete: "email", required: true });
  const password = field("Password", {
    type: "password", name: "password", required: true, minlength: 8,
    autocomplete: title === "Sign up" ? "new-password" : "current-password",
  });
  const error = h("p.err", { role: "alert" });
  const submit = h("button.primary", { type: "submit", text: submitText });
  const f = h("form.stack", {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      email.error(""); password.error("");
      submit.disabled = true;
      try {
        await action(email.input.value, password.input.value);
        go("#/bots");
      } catch (err) {
        for (const d of err.details || []) (d.field === "email" ? email : password).error(d.message);
        error.textContent = err.message;
      } finally { submit.disabled = false; }
    },
  }, email, password, error, submit, other);
  clear(main, h("div.panel", h("h1", title), f));
  email.input.focus();
}

export function login(main) {
  form(main, "Log in", "Log in", signIn, h("p", "New here? ", h("a", { href: "#/register", text: "Create an account" })));
}

export function register(main) {
  form(main, "Sign up", "Create account", signUp, h("p", "Have an account? ", h("a", { href: "#/login", text: "Log in" })));
}
