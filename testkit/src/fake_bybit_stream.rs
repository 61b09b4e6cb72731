//! A fake Bybit v5 public stream on loopback: answers subscribe, unsubscribe and the JSON
//! heartbeat as Bybit does (`{"success":true,"ret_msg":…,"req_id":…,"op":…}`), records what
//! each connection asked for, and pushes frames a test publishes on a topic to every connection
//! subscribed to it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Default)]
struct Seen {
    /// Each subscribe request's topics, in arrival order.
    subscribes: Vec<Vec<String>>,
    /// Topics subscribed now, on any connection.
    topics: BTreeSet<String>,
    /// JSON heartbeats received.
    pings: usize,
    /// WebSocket ping frames received.
    ping_frames: usize,
}

/// The running fake.
#[derive(Debug, Clone)]
pub struct FakeBybitStream {
    /// Its URL (`ws://127.0.0.1:port/v5/public/spot`).
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    frames: broadcast::Sender<(String, String)>,
}

impl FakeBybitStream {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v5/public/spot", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (frames, _) = broadcast::channel(1024);
        let fake = Self { url, seen, frames };
        let serving = fake.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(tcp));
            }
        });
        fake
    }

    /// Pushes `frame` to every connection subscribed to `topic`.
    pub fn publish(&self, topic: &str, frame: &Value) {
        let _ = self.frames.send((topic.to_owned(), frame.to_string()));
    }

    /// Topics subscribed now.
    pub fn topics(&self) -> BTreeSet<String> {
        self.seen.lock().unwrap().topics.clone()
    }

    /// The size of each subscribe request received.
    pub fn subscribe_sizes(&self) -> Vec<usize> {
        self.seen.lock().unwrap().subscribes.iter().map(Vec::len).collect()
    }

    /// JSON heartbeats and WebSocket ping frames received.
    pub fn pings(&self) -> (usize, usize) {
        let seen = self.seen.lock().unwrap();
        (seen.pings, seen.ping_frames)
    }

    async fn serve(self, tcp: tokio::net::TcpStream) {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
        let (mut sink, mut stream) = ws.split();
        let mut published = self.frames.subscribe();
        let mut mine: BTreeSet<String> = BTreeSet::new();
        loop {
            tokio::select! {
                message = stream.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text.to_string(),
                        Some(Ok(Message::Ping(_))) => {
                            self.seen.lock().unwrap().ping_frames += 1;
                            continue;
                        }
                        Some(Ok(_)) => continue,
                        _ => return,
                    };
                    let Ok(request) = serde_json::from_str::<Value>(&text) else { continue };
                    let op = request["op"].as_str().unwrap_or_default().to_owned();
                    let topics: Vec<String> = request["args"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    let ret_msg = {
                        let mut seen = self.seen.lock().unwrap();
                        match op.as_str() {
                            "ping" => {
                                seen.pings += 1;
                                "pong"
                            }
                            "subscribe" => {
                                seen.subscribes.push(topics.clone());
                                seen.topics.extend(topics.iter().cloned());
                                mine.extend(topics);
                                ""
                            }
                            "unsubscribe" => {
                                for topic in &topics {
                                    seen.topics.remove(topic);
                                    mine.remove(topic);
                                }
                                ""
                            }
                            _ => continue,
                        }
                    };
                    let answer = json!({"success": true, "ret_msg": ret_msg, "conn_id": "fake",
                        "req_id": request["req_id"], "op": op});
                    if sink.send(Message::text(answer.to_string())).await.is_err() {
                        return;
                    }
                }
                frame = published.recv() => {
                    let Ok((topic, text)) = frame else { continue };
                    if mine.contains(&topic) && sink.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
