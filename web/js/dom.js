// Building the page without assigning HTML strings: every string lands as text, so API data can never
// become markup (and nothing here needs an inline handler or style the CSP would block).

/** h("tag.class#id", {attr: value, onclick: fn}, ...children) */
export function h(spec, attrs, ...children) {
  const [, tag, rest] = /^([a-z0-9]+)(.*)$/.exec(spec);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  // No attributes object: the second argument is a child (a node, text, a number, a list).
  if (attrs === null || attrs === undefined || typeof attrs !== "object" || attrs.constructor !== Object) {
    if (attrs !== null && attrs !== undefined) children.unshift(attrs);
    attrs = {};
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

let uid = 0;
export const nextId = (p = "f") => `${p}-${++uid}`;

/** A labelled input; returns the label (the input is `.input`). */
export function field(label, attrs = {}, help) {
  const id = attrs.id || nextId();
  const control = attrs.options
    ? h("select", { ...attrs, options: undefined, id }, attrs.options.map(([v, t]) => h("option", { value: v, text: t ?? v })))
    : h("input", { type: "text", ...attrs, id });
  const err = h("span.err", { id: `${id}-err`, "aria-live": "polite" });
  control.setAttribute("aria-describedby", `${id}-err${help ? ` ${id}-help` : ""}`);
  const el = h("label", { for: id }, h("span", label), control, help ? h("span.help", { id: `${id}-help`, text: help }) : null, err);
  el.input = control;
  el.error = (msg) => { err.textContent = msg || ""; control.setAttribute("aria-invalid", msg ? "true" : "false"); };
  return el;
}

export function num(v, digits = 2) {
  if (v === null || v === undefined || v === "") return "–";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  const max = n !== 0 && Math.abs(n) < 1 ? 6 : Math.max(digits, 2);
  return n.toLocaleString("en-US", { minimumFractionDigits: Math.min(digits, max), maximumFractionDigits: max });
}

export function signed(v) {
  const n = Number(v);
  return h("span", { class: n > 0 ? "pos" : n < 0 ? "neg" : "", text: v === null || v === undefined ? "–" : num(v) });
}

export const time = (ms) => (ms ? new Date(ms).toLocaleString() : "–");
export const badge = (status) => h("span", { class: `badge ${status}`, text: status });

let toastTimer;
export function toast(message, kind = "error") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

export function table(headers, rows, cls) {
  return h("div.table-wrap", h("table", { class: cls },
    h("thead", h("tr", headers.map((c) => h("th", { class: c.startsWith("#") ? "num" : null, scope: "col", text: c.replace(/^#/, "") })))),
    h("tbody", rows)));
}
