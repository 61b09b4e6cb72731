//! Whether a live bot's exchange account can pay for its first order, asked when its owner
//! starts it: the balances the account's stream keeps ([`crate::account`]) when a bot of the
//! account runs, otherwise read from the venue now; the price from the venue's feed. The rule
//! itself is pure ([`keel_core::bot::funding`]).

use std::time::Duration;

use rust_decimal::Decimal;

use crate::account::{BalancesError, LiveAccounts};
use crate::feed::{FeedAddress, GetTicker};
use crate::mailbox::ask;
use crate::vault::VaultAddress;
use keel_core::bot::funding::{Shortfall, check_funds, first_order_need};
use keel_core::bot::{BotMode, BotRecord};

/// Longest wait for the feed's price: a start is not held up for market data.
const PRICE_WAIT: Duration = Duration::from_millis(500);

/// Why a start was refused for funding.
#[derive(Debug, thiserror::Error)]
pub enum FundingError {
    /// The account cannot pay for the first order.
    #[error(transparent)]
    Insufficient(#[from] Shortfall),
    /// The account's balances could not be read.
    #[error(transparent)]
    Balances(#[from] BalancesError),
}

/// What the check asks.
#[derive(Debug)]
pub struct Funding<'a> {
    /// Live venues and accounts.
    pub live: &'a LiveAccounts,
    /// The vault, which signs a balances read.
    pub vault: &'a VaultAddress,
    /// The venue's feed, for the price.
    pub feed: Option<&'a FeedAddress>,
}

impl Funding<'_> {
    /// Checks a live bot's account against what its first order needs; anything else passes.
    ///
    /// # Errors
    /// The shortfall, or balances that could not be read.
    pub async fn check(&self, record: &BotRecord) -> Result<(), FundingError> {
        let Some(account_id) = record.exchange_account_id.filter(|_| record.mode == BotMode::Live)
        else {
            return Ok(());
        };
        let Some(need) = first_order_need(record, self.price(record).await) else { return Ok(()) };
        let (book, _) =
            self.live.balances(self.vault, record.venue, record.user_id, account_id).await?;
        let free = book.assets.get(&need.asset).map_or(Decimal::ZERO, |b| b.free);
        check_funds(&need, free)?;
        Ok(())
    }

    async fn price(&self, record: &BotRecord) -> Option<Decimal> {
        let feed = self.feed?.get()?;
        let query = GetTicker { symbol: record.symbol.clone() };
        let ticker = ask(&feed, query, PRICE_WAIT, "feed").await.ok()?.ok()?;
        ticker.last_trade.map(|t| t.price).or_else(|| ticker.quote.map(|q| q.ask))
    }
}
