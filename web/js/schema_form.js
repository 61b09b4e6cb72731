// A form generated from a JSON Schema (an object of scalars, as strategy params are): integer,
// number, decimal strings, strings, enums and booleans, with titles, help, defaults and bounds.
// Errors from the API (`details: [{field, message}]`) are shown beside the field they name.

import { field, h } from "./dom.js";

function labelOf(name, prop) { return prop.title || name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase()); }

/** Returns {element, value(), showErrors(details) -> unplaced details, clearErrors()} */
export function schemaForm(schema, prefix) {
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const fields = new Map();
  const element = h("div.schema-form");
  for (const [name, prop] of Object.entries(props)) {
    const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
    const attrs = { name: `${prefix}.${name}`, required: required.has(name) };
    let help = prop.description || "";
    if (prop.enum) {
      attrs.options = prop.enum.map((v) => [String(v)]);
    } else if (type === "boolean") {
      attrs.type = "checkbox";
    } else if (type === "integer" || type === "number") {
      attrs.type = "number";
      attrs.inputmode = type === "integer" ? "numeric" : "decimal";
      attrs.step = type === "integer" ? "1" : "any";
      if (prop.minimum !== undefined) attrs.min = prop.minimum;
      if (prop.maximum !== undefined) attrs.max = prop.maximum;
    } else {
      attrs.inputmode = prop.format === "decimal" ? "decimal" : undefined;
      if (prop.pattern) attrs.pattern = prop.pattern;
      if (prop.maxLength) attrs.maxlength = prop.maxLength;
    }
    const el = field(labelOf(name, prop), attrs, help || undefined);
    if (prop.default !== undefined) {
      if (type === "boolean") el.input.checked = !!prop.default;
      else el.input.value = String(prop.default);
    }
    el.input.dataset.type = type || "string";
    fields.set(name, el);
    element.append(el);
  }
  return {
    element,
    fields,
    value() {
      const out = {};
      for (const [name, el] of fields) {
        const c = el.input;
        const t = c.dataset.type;
        if (t === "boolean") { out[name] = c.checked; continue; }
        if (c.value === "") continue;
        out[name] = t === "integer" ? Number.parseInt(c.value, 10) : t === "number" ? Number(c.value) : c.value;
      }
      return out;
    },
    /** Shows each detail whose field is `${prefix}.name`; returns the others. */
    showErrors(details) {
      const rest = [];
      for (const d of details) {
        const name = d.field.startsWith(`${prefix}.`) ? d.field.slice(prefix.length + 1) : null;
        const el = name && fields.get(name);
        if (el) el.error(d.message); else rest.push(d);
      }
      return rest;
    },
    clearErrors() { for (const el of fields.values()) el.error(""); },
  };
}
