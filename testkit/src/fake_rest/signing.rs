//! Binance's checks on a signed request, in Binance's order: the `X-MBX-APIKEY` header (`-2015`,
//! HTTP 401), the HMAC-SHA256 `signature` over the query string followed by the body with the
//! `signature` pair removed (`-1022`), then `timestamp` against `recvWindow` (`-1021`). The
//! signature is computed by [`crate::hmac_sha256_hex`], not by Keel's vault, so a test shows that
//! Keel signs as Binance documents rather than as Keel itself expects.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::http::{Answer, Request};
use super::{API_KEY, SECRET_KEY, State};
use crate::hmac_sha256_hex;

/// Percent-decodes a query component (`+` is a space). `None` for a bad escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `raw` without its `signature=` pair, and the signature.
fn split_signature(raw: &str) -> (String, Option<String>) {
    let mut signature = None;
    let rest: Vec<&str> = raw
        .split('&')
        .filter(|pair| match pair.strip_prefix("signature=") {
            Some(sig) => {
                signature = Some(sig.to_owned());
                false
            }
            None => true,
        })
        .collect();
    (rest.join("&"), signature)
}

/// The decoded parameters of the query string and body together.
fn parse_params(request: &Request) -> Result<HashMap<String, String>, Answer> {
    let mut params = HashMap::new();
    for raw in [request.query.as_str(), request.body.as_str()] {
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v)) else {
                return Err(Answer::bad(-1100, "Illegal characters found in a parameter."));
            };
            if params.insert(k, v).is_some() {
                return Err(Answer::bad(-1101, "Duplicate values for a parameter detected."));
            }
        }
    }
    Ok(params)
}

impl State {
    pub(super) fn authenticate(
        &self,
        request: &Request,
    ) -> Result<HashMap<String, String>, Answer> {
        let params = parse_params(request)?;
        if request.header("x-mbx-apikey") != Some(API_KEY) {
            return Err(Answer::error(
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ));
        }
        let (query, query_sig) = split_signature(&request.query);
        let (body, body_sig) = split_signature(&request.body);
        let Some(signature) = query_sig.or(body_sig) else {
            return Err(Answer::mandatory("signature"));
        };
        let payload = format!("{query}{body}");
        let valid = hmac_sha256_hex(SECRET_KEY.as_bytes(), payload.as_bytes())
            .eq_ignore_ascii_case(&signature);
        if !valid {
            return Err(Answer::bad(-1022, "Signature for this request is not valid."));
        }
        let timestamp = params
            .get("timestamp")
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| Answer::mandatory("timestamp"))?;
        let recv_window = match params.get("recvWindow") {
            None => 5_000,
            Some(v) => match v.parse::<i64>() {
                Ok(w) if (1..=60_000).contains(&w) => w,
                _ => return Err(Answer::bad(-1131, "recvWindow must be less than 60000")),
            },
        };
        let now = self.now_ms();
        let forced = self
            .refuse_timestamps
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let refusal = if timestamp > now + 1_000 {
            Some("Timestamp for this request was 1000ms ahead of the server's time.")
        } else if now - timestamp > recv_window || forced {
            Some("Timestamp for this request is outside of the recvWindow.")
        } else {
            None
        };
        if let Some(msg) = refusal {
            self.clock_refusals.fetch_add(1, Ordering::SeqCst);
            return Err(Answer::bad(-1021, msg));
        }
        self.signed.fetch_add(1, Ordering::SeqCst);
        Ok(params)
    }
}
