//! A fake Bybit v5 private stream on loopback, strict as Bybit documents it
//! (<https://bybit-exchange.github.io/docs/v5/ws/connect>): the first request must be
//! `{"op":"auth","args":[api_key, expires, signature]}` with the signature the hex HMAC-SHA256
//! of `"GET/realtime" + expires` under the fake's secret and `expires` not past; a subscribe
//! before it is refused; `{"op":"ping"}` is answered with the private stream's pong. Frames a
//! test (or [`FakeBybit`](crate::fake_bybit::FakeBybit), as its orders fill) publishes on a topic
//! go to every authenticated connection subscribed to it. A test can drop every connection.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use crate::fake_bybit::{API_KEY, API_SECRET};
use crate::hmac_sha256_hex;

#[derive(Debug, Default)]
struct Seen {
    /// Topics subscribed now, on any connection.
    topics: BTreeSet<String>,
    /// Authentications refused, with Bybit's message.
    refusals: Vec<String>,
}

#[derive(Debug)]
struct Counters {
    auths: AtomicUsize,
    subscribes: AtomicUsize,
    pings: AtomicUsize,
    live: AtomicUsize,
}

/// The running fake.
#[derive(Debug, Clone)]
pub struct FakeBybitPrivate {
    /// Its URL (`ws://127.0.0.1:port/v5/private`).
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    counters: Arc<Counters>,
    frames: broadcast::Sender<(String, String)>,
    kick: broadcast::Sender<()>,
}

impl FakeBybitPrivate {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v5/private", listener.local_addr().unwrap());
        let (frames, _) = broadcast::channel(1024);
        let (kick, _) = broadcast::channel(16);
        let fake = Self {
            url,
            seen: Arc::default(),
            counters: Arc::new(Counters {
                auths: AtomicUsize::new(0),
                subscribes: AtomicUsize::new(0),
                pings: AtomicUsize::new(0),
                live: AtomicUsize::new(0),
            }),
            frames,
            kick,
        };
        let serving = fake.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(tcp));
            }
        });
        fake
    }

    /// Pushes `data` on `topic` (`order`, `execution`, `position`, `wallet`) to every
    /// subscribed connection, in Bybit's envelope.
    pub fn publish(&self, topic: &str, data: Value) {
        let now = now_ms();
        let frame = json!({"id": format!("{now}-{topic}"), "topic": topic, "creationTime": now,
            "data": data});
        let _ = self.frames.send((topic.to_owned(), frame.to_string()));
    }

    /// Closes every connection (the client must reconnect).
    pub fn drop_connections(&self) {
        let _ = self.kick.send(());
    }

    /// Successful authentications so far.
    pub fn auths(&self) -> usize {
        self.counters.auths.load(Ordering::Relaxed)
    }

    /// Successful subscriptions so far.
    pub fn subscribes(&self) -> usize {
        self.counters.subscribes.load(Ordering::Relaxed)
    }

    /// Connections authenticated and subscribed now.
    pub fn live_connections(&self) -> usize {
        self.counters.live.load(Ordering::Relaxed)
    }

    /// `{"op":"ping"}` heartbeats received.
    pub fn pings(&self) -> usize {
        self.counters.pings.load(Ordering::Relaxed)
    }

    /// Topics subscribed now.
    pub fn topics(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().topics.clone()
    }

    /// Authentications refused, with the message sent.
    pub fn refusals(&self) -> Vec<String> {
        self.seen.lock().unwrap().refusals.clone()
    }

    async fn serve(self, tcp: tokio::net::TcpStream) {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
        let (mut sink, mut stream) = ws.split();
        let mut frames = self.frames.subscribe();
        let mut kick = self.kick.subscribe();
        let conn_id = format!("fake-{}", now_ms());
        let mut authed = false;
        let mut topics: BTreeSet<String> = BTreeSet::new();
        loop {
            tokio::select! {
                // A drop comes before anything published after it.
                biased;
                _ = kick.recv() => break,
                pushed = frames.recv() => {
                    let Ok((topic, frame)) = pushed else { continue };
                    if authed && topics.contains(&topic)
                        && sink.send(Message::text(frame)).await.is_err()
                    {
                        break;
                    }
                }
                incoming = stream.next() => {
                    let Some(Ok(Message::Text(text))) = incoming else {
                        match incoming {
                            Some(Ok(Message::Ping(p))) => {
                                let _ = sink.send(Message::Pong(p)).await;
                                continue;
                            }
                            Some(Ok(_)) => continue,
                            _ => break,
                        }
                    };
                    let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let op = request["op"].as_str().unwrap_or_default().to_owned();
                    let req_id = request["req_id"].clone();
                    let answer = match op.as_str() {
                        "auth" => {
                            let verdict = self.check_auth(&request["args"]);
                            let was = authed;
                            authed = verdict.is_ok();
                            if authed && !was {
                                self.counters.auths.fetch_add(1, Ordering::Relaxed);
                            }
                            let msg = verdict.err().unwrap_or_default();
                            if !msg.is_empty() {
                                self.seen.lock().unwrap().refusals.push(msg.clone());
                            }
                            json!({"success": authed, "ret_msg": msg, "op": "auth",
                                "conn_id": conn_id, "req_id": req_id})
                        }
                        "subscribe" if authed => {
                            let was_live = !topics.is_empty();
                            for t in request["args"].as_array().into_iter().flatten() {
                                if let Some(t) = t.as_str() {
                                    topics.insert(t.to_owned());
                                    self.seen.lock().unwrap().topics.insert(t.to_owned());
                                }
                            }
                            self.counters.subscribes.fetch_add(1, Ordering::Relaxed);
                            if !was_live {
                                self.counters.live.fetch_add(1, Ordering::Relaxed);
                            }
                            json!({"success": true, "ret_msg": "", "op": "subscribe",
                                "conn_id": conn_id, "req_id": req_id})
                        }
                        "subscribe" => json!({"success": false,
                            "ret_msg": "Request not authorized", "op": "subscribe",
                            "conn_id": conn_id, "req_id": req_id}),
                        "ping" => {
                            self.counters.pings.fetch_add(1, Ordering::Relaxed);
                            json!({"req_id": req_id, "op": "pong",
                                "args": [now_ms().to_string()], "conn_id": conn_id})
                        }
                        _ => json!({"success": false, "ret_msg": format!("unknown op {op:?}"),
                            "op": op, "conn_id": conn_id}),
                    };
                    if sink.send(Message::text(answer.to_string())).await.is_err() {
                        break;
                    }
                }
            }
        }
        if !topics.is_empty() {
            self.counters.live.fetch_sub(1, Ordering::Relaxed);
            let mut seen = self.seen.lock().unwrap();
            for t in &topics {
                seen.topics.remove(t);
            }
        }
        let _ = sink.close().await;
    }

    /// Bybit's check of `[api_key, expires, signature]`.
    fn check_auth(&self, args: &Value) -> Result<(), String> {
        let (Some(key), Some(expires), Some(signature)) =
            (args[0].as_str(), args[1].as_u64(), args[2].as_str())
        else {
            return Err("Params Error".into());
        };
        if key != API_KEY {
            return Err("API key is invalid.".into());
        }
        if expires <= now_ms() as u64 {
            return Err(format!("error:request expired, expires={expires}"));
        }
        let expected =
            hmac_sha256_hex(API_SECRET.as_bytes(), format!("GET/realtime{expires}").as_bytes());
        if expected != signature {
            return Err("Request not authorized".into());
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
