//! How a request reaches Bybit: signed (with the clock applied), sent under the rate-limit
//! state, and its envelope read.

use std::sync::atomic::Ordering;

use serde::de::DeserializeOwned;

use super::{DEFAULT_BACKOFF_MS, Envelope, IP_BAN_MS, RestClient, RestError, header_u64};
use crate::budget::{AccountKey, BudgetAsk};
use crate::clock::{local_ms, signed_call};
use crate::routing::Signer;

/// Bybit's one endpoint that creates orders (plain and conditional alike).
pub(super) const ORDER_CREATE: &str = "/v5/order/create";

impl RestClient {
    /// A signed call with the clock applied (`crate::clock::signed_call`): measured first when
    /// stale, and once more after a `10002`, then sent again. Nothing else is retried.
    pub(super) async fn signed<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        payload: String,
        signer: Signer<'_>,
    ) -> Result<T, RestError> {
        signed_call(
            &self.clock,
            self.venue(),
            || self.measure(),
            || self.signed_once(method.clone(), path, &payload, signer),
            RestError::is_clock_skew,
        )
        .await
    }

    async fn measure(&self) -> Result<i64, RestError> {
        let measured = self.sync_time().await;
        if let Err(err) = &measured {
            tracing::warn!(venue = self.venue(), error = %err, "bybit clock not measured");
        }
        measured
    }

    async fn signed_once<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        payload: &str,
        signer: Signer<'_>,
    ) -> Result<T, RestError> {
        // The vault holds the key; learn it (the signature of an empty text is discarded).
        let (api_key, _) = signer(String::new()).await.map_err(RestError::Sign)?;
        if method == reqwest::Method::POST && path == ORDER_CREATE {
            let account = AccountKey::new(self.category.venue, &api_key);
            let ask = BudgetAsk {
                account: &account,
                limits: self.category.order_limits,
                orders: 1,
                now_ms: self.clock.timestamp(),
                uncertainty_ms: self.clock.uncertainty_ms(),
            };
            self.budget.take(ask).await?;
        }
        let timestamp = self.clock.timestamp().to_string();
        let recv_window = self.recv_window_ms.to_string();
        let text = format!("{timestamp}{api_key}{recv_window}{payload}");
        let (_, signature) = signer(text).await.map_err(RestError::Sign)?;
        let req = if method == reqwest::Method::GET {
            let url = if payload.is_empty() {
                format!("{}{path}", self.base)
            } else {
                format!("{}{path}?{payload}", self.base)
            };
            self.http.get(url)
        } else {
            self.http
                .request(method, format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload.to_owned())
        };
        let req = req
            .header("X-BAPI-API-KEY", &api_key)
            .header("X-BAPI-TIMESTAMP", &timestamp)
            .header("X-BAPI-RECV-WINDOW", &recv_window)
            .header("X-BAPI-SIGN", &signature);
        let envelope = self.send(req).await?;
        self.result(envelope)
    }

    /// The `result` of a successful answer; a non-zero `retCode` as an error. The result is read
    /// only after the code: an error's `result` is `{}`.
    pub(super) fn result<T: DeserializeOwned>(
        &self,
        envelope: Envelope<serde_json::Value>,
    ) -> Result<T, RestError> {
        if envelope.ret_code != 0 {
            metrics::counter!("keel_venue_errors_total", "venue" => self.venue(), "code" => envelope.ret_code.to_string()).increment(1);
            if envelope.ret_code == 10006 {
                // Too many visits: wait for the budget's reset (the header, when sent, already set it).
                let until = local_ms() + DEFAULT_BACKOFF_MS;
                self.blocked_until_ms.fetch_max(until, Ordering::Relaxed);
            }
            return Err(RestError::Api {
                status: 200,
                code: envelope.ret_code,
                msg: envelope.ret_msg,
            });
        }
        let result = envelope.result.ok_or_else(|| RestError::Decode("no `result`".into()))?;
        serde_json::from_value(result).map_err(|e| RestError::Decode(e.to_string()))
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Envelope<serde_json::Value>, RestError> {
        let now = local_ms();
        let blocked_until = self.blocked_until_ms.load(Ordering::Relaxed);
        if now < blocked_until {
            return Err(RestError::Backoff(blocked_until - now));
        }
        let res = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_builder() {
                RestError::NotSent(e.to_string())
            } else {
                RestError::NoAnswer(e.to_string())
            }
        })?;
        let status = res.status().as_u16();
        let headers = res.headers();
        let left = header_u64(headers, "x-bapi-limit-status");
        let reset = header_u64(headers, "x-bapi-limit-reset-timestamp");
        if left == Some(0)
            && let Some(reset) = reset
        {
            self.blocked_until_ms.fetch_max(reset, Ordering::Relaxed);
        }
        if status == 403 {
            self.blocked_until_ms.fetch_max(local_ms() + IP_BAN_MS, Ordering::Relaxed);
            tracing::warn!(venue = self.venue(), "bybit refused this IP (403): pausing 10 minutes");
        }
        let body = res.bytes().await.map_err(|e| RestError::NoAnswer(e.to_string()))?;
        if !(200..300).contains(&status) {
            let msg: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            let code = serde_json::from_slice::<Envelope<serde_json::Value>>(&body)
                .map(|e| e.ret_code)
                .unwrap_or(0);
            return Err(RestError::Api { status, code, msg });
        }
        serde_json::from_slice(&body).map_err(|e| RestError::Decode(e.to_string()))
    }
}
