//! HTTP helpers the load examples share (included with `#[path]`: examples are one crate each).

#![allow(dead_code)] // each example uses a part

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Sends a request and returns the JSON body, failing unless the status is `expect`.
pub async fn call(req: reqwest::RequestBuilder, expect: u16, what: &str) -> anyhow::Result<Value> {
    let res = req.send().await.with_context(|| what.to_owned())?;
    let status = res.status().as_u16();
    let text = res.text().await.with_context(|| what.to_owned())?;
    if status != expect {
        bail!("{what} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: body is not JSON"))
}

/// A counter's total over every label set, from Prometheus text (0 when absent).
pub fn counter_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
