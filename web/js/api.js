// The public REST API: tokens (access in memory only, refresh in this tab's sessionStorage so a
// reload keeps you signed in), the refresh flow, and the API's error shape.

const REFRESH_KEY = "keel.refresh";
let access = null;
let refreshTimer = null;
let refreshing = null;
export const auth = new EventTarget(); // "login", "logout", "token"

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "HTTP_" + status;
    this.details = e.details || [];
  }
}

export const token = () => access;
export const signedIn = () => access !== null;

function accept(pair) {
  access = pair.access_token;
  sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
  clearTimeout(refreshTimer);
  // Refresh well before the access token expires, so the WebSocket never sees it lapse.
  const ms = Math.max(5, pair.expires_in * 0.75) * 1000;
  refreshTimer = setTimeout(() => refresh().catch(() => {}), ms);
  auth.dispatchEvent(new Event("token"));
}

function forget() {
  const was = access !== null;
  access = null;
  sessionStorage.removeItem(REFRESH_KEY);
  clearTimeout(refreshTimer);
  if (was) auth.dispatchEvent(new Event("logout"));
}

async function raw(method, path, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (access) init.headers.authorization = `Bearer ${access}`;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    init.body = body;
    init.headers["content-type"] = init.headers["content-type"] || "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  return fetch(`/api/v1${path}`, init);
}

async function parse(res) {
  if (res.status === 204) return null;
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

/** Calls the API; a 401 triggers one refresh and a retry. */
export async function api(method, path, body, headers) {
  let res = await raw(method, path, body, headers);
  if (res.status === 401 && access) {
    try { await refresh(); } catch { forget(); throw new ApiError(401, await res.json().catch(() => null)); }
    res = await raw(method, path, body, headers);
  }
  return parse(res);
}

/** Every row of a paged list after `from` (`?after=`), at most `max` pages of 500. */
export async function allPages(path, max = 20, from = 0) {
  let after = from;
  const out = [];
  for (let i = 0; i < max; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=500&after=${after}`);
    out.push(...page.items);
    if (page.next_after === null || page.next_after === undefined) break;
    after = page.next_after;
  }
  return out;
}

export async function refresh() {
  const refresh_token = sessionStorage.getItem(REFRESH_KEY);
  if (!refresh_token) throw new ApiError(401, null);
  if (!refreshing) {
    refreshing = (async () => {
      const res = await fetch("/api/v1/auth/refresh", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ refresh_token }),
      });
      const pair = await parse(res);
      accept(pair);
    })().finally(() => { refreshing = null; });
  }
  return refreshing;
}

export async function login(email, password) {
  accept(await parse(await raw("POST", "/auth/login", { email, password })));
  auth.dispatchEvent(new Event("login"));
}

export async function register(email, password) {
  const made = await parse(await raw("POST", "/auth/register", { email, password }));
  accept(made.tokens);
  auth.dispatchEvent(new Event("login"));
}

/** Restores a session from this tab's refresh token; false when there is none (or it is dead). */
export async function resume() {
  if (!sessionStorage.getItem(REFRESH_KEY)) return false;
  try { await refresh(); } catch { forget(); return false; }
  auth.dispatchEvent(new Event("login"));
  return true;
}

export async function logout() {
  try { if (access) await raw("POST", "/auth/logout"); } finally { forget(); }
}

/** After "sign out everywhere" or a password change the server revoked this session too. */
export const dropSession = forget;
