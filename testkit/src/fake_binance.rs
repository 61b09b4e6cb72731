//! A local fake of Binance's combined-stream WebSocket endpoint, with scripted faults.
//!
//! It speaks the protocol in `../shared/fixtures/binance/`: `SUBSCRIBE`/`UNSUBSCRIBE` requests
//! answered with `{"result":null,"id":N}`, data wrapped as `{"stream":…,"data":…}`, server pings.
//! Tests script faults through [`FakeBinance`]: drop every connection, go silent, refuse
//! connections, send garbage, oversized or invalid UTF-8 frames, or `serverShutdown`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// What the test tells every live connection.
#[derive(Debug, Clone)]
enum Script {
    /// Send a frame to connections subscribed to `stream` (or all when `None`).
    Send(Option<String>, Message),
    /// Close every connection abruptly.
    Drop,
}

#[derive(Debug, Default)]
struct State {
    /// Subscriptions of the most recent connection.
    subscriptions: Mutex<BTreeSet<String>>,
    /// Connections accepted so far.
    connections: AtomicUsize,
    /// Accept and immediately close (a flapping server).
    refuse: AtomicBool,
    /// Stop sending data (pings are still answered by the client side).
    silent: AtomicBool,
    /// Pongs received from the client.
    pongs: AtomicUsize,
}

#[derive(Debug)]
/// A running fake server on 127.0.0.1.
pub struct FakeBinance {
    /// `ws://127.0.0.1:PORT/stream`.
    pub url: String,
    state: Arc<State>,
    script: broadcast::Sender<Script>,
}

impl FakeBinance {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/stream", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let (script, _) = broadcast::channel(1024);
        let (s, tx) = (state.clone(), script.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                if s.refuse.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                tokio::spawn(serve(tcp, s.clone(), tx.subscribe()));
            }
        });
        Self { url, state, script }
    }

    /// Connections accepted so far (refused ones included).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Streams the latest connection is subscribed to.
    pub fn subscriptions(&self) -> BTreeSet<String> {
        self.state.subscriptions.lock().unwrap().clone()
    }

    /// Pongs received.
    pub fn pongs(&self) -> usize {
        self.state.pongs.load(Ordering::SeqCst)
    }

    /// Sends `payload` on `stream`, wrapped as Binance's combined streams do.
    pub fn publish(&self, stream: &str, payload: &str) {
        let text = format!(r#"{{"stream":"{stream}","data":{payload}}}"#);
        let _ = self.script.send(Script::Send(Some(stream.to_owned()), Message::text(text)));
    }

    /// Sends a raw text frame to every connection.
    pub fn send_text(&self, text: &str) {
        let _ = self.script.send(Script::Send(None, Message::text(text.to_owned())));
    }

    /// Sends any frame to every connection.
    pub fn send_frame(&self, message: Message) {
        let _ = self.script.send(Script::Send(None, message));
    }

    /// Sends a text frame whose payload is not UTF-8.
    pub fn send_invalid_utf8(&self) {
        let frame = Frame::message(vec![0xff, 0xfe, 0x7b], OpCode::Data(Data::Text), true);
        self.send_frame(Message::Frame(frame));
    }

    /// Sends Binance's `serverShutdown` event.
    pub fn server_shutdown(&self) {
        self.send_text(r#"{"e":"serverShutdown","E":1732307999999}"#);
    }

    /// Closes every connection abruptly.
    pub fn drop_connections(&self) {
        let _ = self.script.send(Script::Drop);
    }

    /// Accepts connections and closes them at once, from now on.
    pub fn refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Stops (or resumes) sending data.
    pub fn silent(&self, silent: bool) {
        self.state.silent.store(silent, Ordering::SeqCst);
    }
}

async fn serve(
    tcp: tokio::net::TcpStream,
    state: Arc<State>,
    mut script: broadcast::Receiver<Script>,
) {
    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else { return };
    let (mut sink, mut stream) = ws.split();
    let mut mine = BTreeSet::new();
    state.subscriptions.lock().unwrap().clear();
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { return };
                match frame {
                    Message::Text(text) => {
                        let request: serde_json::Value = match serde_json::from_str(text.as_str()) {
                            Ok(v) => v,
                            Err(_) => continue,
                        };
                        let id = request["id"].clone();
                        let names: Vec<String> = request["params"].as_array().into_iter().flatten()
                            .filter_map(|v| v.as_str().map(str::to_owned)).collect();
                        match request["method"].as_str() {
                            Some("SUBSCRIBE") => mine.extend(names),
                            Some("UNSUBSCRIBE") => for name in &names { mine.remove(name); },
                            _ => {}
                        }
                        *state.subscriptions.lock().unwrap() = mine.clone();
                        let ack = format!(r#"{{"result":null,"id":{id}}}"#);
                        if sink.send(Message::text(ack)).await.is_err() { return; }
                    }
                    Message::Ping(payload) => {
                        let answered = sink.send(Message::Pong(payload)).await;
                        if answered.is_err() { return; }
                    }
                    Message::Pong(_) => { state.pongs.fetch_add(1, Ordering::SeqCst); }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
            order = script.recv() => {
                match order {
                    Ok(Script::Drop) | Err(broadcast::error::RecvError::Closed) => return,
                    Ok(Script::Send(stream, message)) => {
                        let wanted = stream.as_ref().is_none_or(|s| mine.contains(s));
                        let is_data = stream.is_some();
                        if wanted && !(is_data && state.silent.load(Ordering::SeqCst))
                            && sink.send(message).await.is_err() { return; }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                }
            }
        }
    }
}
