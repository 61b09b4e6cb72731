//! Derivatives on Bybit v5: leverage, the unified account's margin mode, positions and funding.

use rust_decimal::Decimal;
use serde::Deserialize;

use super::{
    EXECUTION_WINDOW_MS, LEVERAGE_NOT_MODIFIED, List, MAX_FUNDING_WINDOWS, RawExecution,
    RestClient, RestError,
};
use crate::routing::{FundingPayment, Signer, VenuePosition};
use crate::urlencode;
use keel_core::bot::MarginType;
use keel_core::market::Symbol;

impl RestClient {
    /// Sets `symbol`'s leverage for both sides (`POST /v5/position/set-leverage`; one-way mode
    /// wants them equal). Already so (`110043`) is success.
    ///
    /// # Errors
    /// The call failed.
    pub async fn set_leverage(
        &self,
        symbol: &Symbol,
        leverage: u32,
        signer: Signer<'_>,
    ) -> Result<(), RestError> {
        let body = serde_json::json!({
            "category": self.category.name,
            "symbol": symbol.as_str(),
            "buyLeverage": leverage.to_string(),
            "sellLeverage": leverage.to_string(),
        })
        .to_string();
        match self
            .signed::<serde_json::Value>(
                reqwest::Method::POST,
                "/v5/position/set-leverage",
                body,
                signer,
            )
            .await
        {
            Err(RestError::Api { code: LEVERAGE_NOT_MODIFIED, .. }) | Ok(_) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The unified account's margin mode (`GET /v5/account/info`): isolated, or cross (regular
    /// and portfolio margin are both cross-margined).
    ///
    /// # Errors
    /// The call failed, or the mode is not one Bybit documents.
    pub async fn margin_mode(&self, signer: Signer<'_>) -> Result<MarginType, RestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Info {
            margin_mode: String,
        }
        let info: Info =
            self.signed(reqwest::Method::GET, "/v5/account/info", String::new(), signer).await?;
        match info.margin_mode.as_str() {
            "ISOLATED_MARGIN" => Ok(MarginType::Isolated),
            "REGULAR_MARGIN" | "PORTFOLIO_MARGIN" => Ok(MarginType::Cross),
            other => Err(RestError::Decode(format!("unknown margin mode {other:?}"))),
        }
    }

    /// Makes the unified account's margin mode `margin_type`, unless it already is: a unified
    /// account sets it for the whole account (`POST /v5/account/set-margin-mode`,
    /// `ISOLATED_MARGIN` or `REGULAR_MARGIN`); the per-symbol `switch-isolated` is for classic
    /// accounts only. Bybit refuses the switch while positions or orders stand in its way, with
    /// its reasons.
    ///
    /// # Errors
    /// The call failed or Bybit gave reasons not to switch.
    pub async fn set_margin_mode(
        &self,
        margin_type: MarginType,
        signer: Signer<'_>,
    ) -> Result<(), RestError> {
        if self.margin_mode(signer).await? == margin_type {
            return Ok(());
        }
        #[derive(Deserialize)]
        struct Reasons {
            #[serde(default)]
            reasons: Vec<Reason>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Reason {
            #[serde(default)]
            reason_code: String,
            #[serde(default)]
            reason_msg: String,
        }
        let mode = match margin_type {
            MarginType::Isolated => "ISOLATED_MARGIN",
            MarginType::Cross => "REGULAR_MARGIN",
        };
        let body = serde_json::json!({ "setMarginMode": mode }).to_string();
        let answer: Reasons =
            self.signed(reqwest::Method::POST, "/v5/account/set-margin-mode", body, signer).await?;
        match answer.reasons.first() {
            None => Ok(()),
            Some(reason) => Err(RestError::Api {
                status: 200,
                code: reason.reason_code.parse().unwrap_or(0),
                msg: reason.reason_msg.clone(),
            }),
        }
    }

    /// The account's open positions in this category (`GET /v5/position/list`, by settle
    /// coin, every page); flat ones are left out.
    ///
    /// # Errors
    /// The call failed.
    pub async fn positions(
        &self,
        settle_coins: &[&str],
        margin_type: Option<MarginType>,
        signer: Signer<'_>,
    ) -> Result<Vec<VenuePosition>, RestError> {
        let mut out = Vec::new();
        for coin in settle_coins {
            let mut cursor = String::new();
            for _ in 0..50 {
                let mut query =
                    format!("category={}&settleCoin={coin}&limit=200", self.category.name);
                if !cursor.is_empty() {
                    query.push_str("&cursor=");
                    query.push_str(&urlencode(&cursor));
                }
                let page: List<RawPosition> =
                    self.signed(reqwest::Method::GET, "/v5/position/list", query, signer).await?;
                out.extend(
                    page.list
                        .iter()
                        .filter_map(|p| p.to_position(margin_type))
                        .filter(|p| !p.qty.is_zero()),
                );
                if page.next_page_cursor.is_empty() {
                    break;
                }
                cursor = page.next_page_cursor;
            }
        }
        Ok(out)
    }

    /// Funding paid or received on `symbol` from `since_ms` on, oldest first: the executions
    /// of type `Funding` (`GET /v5/execution/list?execType=Funding`), asked for in the 7-day
    /// windows Bybit answers for, every page, at most the last two years (what Bybit keeps).
    ///
    /// # Errors
    /// The call failed.
    pub async fn funding(
        &self,
        symbol: &Symbol,
        since_ms: u64,
        signer: Signer<'_>,
    ) -> Result<Vec<FundingPayment>, RestError> {
        let now = self.clock.timestamp().max(since_ms);
        let mut out = Vec::new();
        let mut start = since_ms.max(now.saturating_sub(MAX_FUNDING_WINDOWS * EXECUTION_WINDOW_MS));
        for _ in 0..=MAX_FUNDING_WINDOWS {
            let end = (start + EXECUTION_WINDOW_MS - 1).min(now);
            let mut cursor = String::new();
            for _ in 0..50 {
                let mut query = format!(
                    "category={}&symbol={}&execType=Funding&startTime={start}&endTime={end}&limit=100",
                    self.category.name,
                    symbol.as_str()
                );
                if !cursor.is_empty() {
                    query.push_str("&cursor=");
                    query.push_str(&urlencode(&cursor));
                }
                let page: List<RawExecution> =
                    self.signed(reqwest::Method::GET, "/v5/execution/list", query, signer).await?;
                out.extend(page.list.iter().filter(|e| e.exec_type == "Funding").filter_map(|e| {
                    funding_payment(
                        &e.symbol,
                        &e.exec_id,
                        &e.exec_fee,
                        &e.exec_time,
                        &e.fee_currency,
                    )
                }));
                if page.next_page_cursor.is_empty() {
                    break;
                }
                cursor = page.next_page_cursor;
            }
            if end >= now {
                break;
            }
            start = end + 1;
        }
        out.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then_with(|| a.id.cmp(&b.id)));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }
}

/// The coin a linear contract settles in: USDT perpetuals end in `USDT`; the others are USDC's.
pub fn settle_coin(symbol: &str) -> &'static str {
    if symbol.ends_with("USDT") { "USDT" } else { "USDC" }
}

/// A position as Bybit lists it (`/v5/position/list`) and pushes it (the private `position`
/// topic): the same fields in both.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPosition {
    /// `linear`, `inverse`, `option` (the stream says; the REST list does not repeat it).
    #[serde(default)]
    pub category: Option<String>,
    /// Symbol.
    pub symbol: String,
    /// `Buy` (long), `Sell` (short), or empty / `None` when flat.
    #[serde(default)]
    pub side: String,
    /// Size, unsigned.
    pub size: String,
    /// Average entry price.
    #[serde(default)]
    pub avg_price: Option<String>,
    /// The stream's older name for it.
    #[serde(default)]
    pub entry_price: Option<String>,
    /// Mark price.
    #[serde(default)]
    pub mark_price: Option<String>,
    /// Liquidation price ("" when none).
    #[serde(default)]
    pub liq_price: Option<String>,
    /// Unrealised P&L.
    #[serde(default)]
    pub unrealised_pnl: Option<String>,
    /// Leverage.
    #[serde(default)]
    pub leverage: Option<String>,
    /// Last change, ms.
    #[serde(default)]
    pub updated_time: Option<String>,
}

impl RawPosition {
    /// The seam's position; `None` when its numbers are not numbers. `margin_type` is the
    /// account's (a unified account's margin mode is account-wide; `tradeMode` is deprecated).
    pub fn to_position(&self, margin_type: Option<MarginType>) -> Option<VenuePosition> {
        let number = |s: &Option<String>| -> Option<Decimal> {
            s.as_deref().filter(|v| !v.is_empty()).and_then(|v| v.parse().ok())
        };
        let size: Decimal = self.size.parse().ok()?;
        let qty = match self.side.as_str() {
            "Sell" => -size,
            "Buy" => size,
            _ => Decimal::ZERO,
        };
        let entry = number(&self.avg_price).or_else(|| number(&self.entry_price));
        let leverage = number(&self.leverage)
            .and_then(|l| rust_decimal::prelude::ToPrimitive::to_u32(&l.round()));
        Some(VenuePosition {
            symbol: self.symbol.clone(),
            qty,
            entry_price: if qty.is_zero() { Decimal::ZERO } else { entry.unwrap_or_default() },
            mark_price: number(&self.mark_price),
            liquidation_price: number(&self.liq_price).filter(|p| !p.is_zero()),
            unrealized_pnl: number(&self.unrealised_pnl).unwrap_or_default(),
            leverage: leverage.filter(|l| *l > 0),
            margin_type,
            updated_ms: self.updated_time.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0),
        })
    }
}

/// A funding execution as a payment. Bybit's `execFee` of a funding is what the account paid
/// (negative when it received), so the payment's signed amount is its negation.
pub fn funding_payment(
    symbol: &str,
    exec_id: &str,
    exec_fee: &str,
    exec_time: &str,
    fee_currency: &str,
) -> Option<FundingPayment> {
    let fee: Decimal = exec_fee.parse().ok()?;
    let asset = if fee_currency.is_empty() { settle_coin(symbol) } else { fee_currency };
    Some(FundingPayment {
        symbol: symbol.to_owned(),
        asset: asset.to_owned(),
        amount: -fee,
        time_ms: exec_time.parse().ok()?,
        id: exec_id.to_owned(),
    })
}
