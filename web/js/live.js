// One WebSocket for the whole page (docs/WEBSOCKET.md): authenticated with an `auth` message,
// re-authenticated after each token refresh, reconnected with backoff, channels resubscribed.
// Bot channels carry the journal id as `seq`: after a reconnect, listeners are told to resync.

import { auth, token } from "./api.js";

const listeners = new Map(); // channel -> Set<fn(data, frame)>
const resyncs = new Map(); // channel -> Set<fn()>
let ws = null;
let ready = false;
let backoff = 500;
let retry = null;
let wanted = false;
export const state = new EventTarget(); // "change" with .detail = "connected" | "connecting" | "offline"
export let status = "offline";

function setStatus(s) { status = s; state.dispatchEvent(new CustomEvent("change", { detail: s })); }

function send(msg) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); }

function connect() {
  if (!wanted || ws) return;
  setStatus("connecting");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/api/v1/ws`);
  ws.onopen = () => send({ op: "auth", token: token() });
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "event") {
      const set = listeners.get(msg.channel);
      if (set) for (const fn of set) fn(msg.data, msg);
    } else if (msg.type === "authenticated") {
      const first = !ready;
      ready = true;
      backoff = 500;
      setStatus("connected");
      if (first && listeners.size) {
        send({ op: "subscribe", channels: [...listeners.keys()] });
        for (const set of resyncs.values()) for (const fn of set) fn();
      }
    } else if (msg.type === "lagged") {
      const set = resyncs.get(msg.channel);
      if (set) for (const fn of set) fn();
    }
  };
  ws.onclose = () => {
    ws = null;
    ready = false;
    if (!wanted) { setStatus("offline"); return; }
    setStatus("connecting");
    retry = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 15000);
  };
}

export function start() { wanted = true; connect(); }

export function stop() {
  wanted = false;
  clearTimeout(retry);
  if (ws) ws.close(1000);
  ws = null;
  ready = false;
  setStatus("offline");
}

auth.addEventListener("token", () => { if (ready) send({ op: "auth", token: token() }); });
auth.addEventListener("logout", stop);

/**
 * Listens to a channel; `onResync` runs after a reconnect or a `lagged` notice, when events may
 * have been missed. Returns the function that stops listening.
 */
export function subscribe(channel, fn, onResync) {
  let set = listeners.get(channel);
  if (!set) {
    set = new Set();
    listeners.set(channel, set);
    if (ready) send({ op: "subscribe", channels: [channel] });
  }
  set.add(fn);
  if (onResync) {
    if (!resyncs.has(channel)) resyncs.set(channel, new Set());
    resyncs.get(channel).add(onResync);
  }
  return () => {
    set.delete(fn);
    if (onResync) resyncs.get(channel)?.delete(onResync);
    if (!set.size) {
      listeners.delete(channel);
      resyncs.delete(channel);
      if (ready) send({ op: "unsubscribe", channels: [channel] });
    }
  };
}
