//! Admission of a bot definition against the running system: the instrument's rules from the
//! venue's feed, and a live bot's exchange account from the vault. The checks themselves are
//! pure (`keel_core::bot::admission`); this asks the actors for what they need.

use std::time::Duration;

use actix::Addr;
use keel_core::bot::admission::{
    check_account, check_derivatives, check_strategy, static_errors, unknown_symbol,
};
use keel_core::bot::user_risk::LeverageCaps;
use keel_core::bot::{BotMode, BotRecord};
use keel_core::market::VenueId;
use keel_core::validation::FieldError;

use crate::feed::{FeedAddress, GetInstrument, InstrumentError};
use crate::mailbox::{AskError, ask};
use crate::strategies::{Modules, ModulesError};
use crate::vault::{ListCredentials, VaultAddress, VaultError};

/// Why a definition could not be checked (as opposed to checked and found wrong).
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// A feed or the vault is restarting, full or slow.
    #[error(transparent)]
    Unavailable(#[from] AskError),
    /// The venue's instrument rules are not loaded yet (its REST endpoint is unreachable).
    #[error("{0}'s instrument rules are not available yet; retry shortly")]
    MarketDataUnavailable(VenueId),
    /// The vault could not list the user's accounts.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The strategy module could not be checked (storage, the WebAssembly host).
    #[error(transparent)]
    Modules(#[from] ModulesError),
}

/// What admission asks, and how long it waits for each answer.
#[derive(Debug)]
pub struct Admission<'a> {
    /// The bot's venue's feed (none when the venue is not enabled).
    pub feed: Option<&'a FeedAddress>,
    /// The vault, asked only for a live bot with an exchange account.
    pub vault: &'a VaultAddress,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Whether the bot's venue is configured for its testnet.
    pub venue_testnet: bool,
    /// Owners' strategy modules, for a bot of kind `wasm`.
    pub modules: &'a Modules,
    /// The leverage caps above the bot's own: its owner's and the operator's.
    pub leverage_caps: LeverageCaps,
}

impl Admission<'_> {
    /// Checks a whole definition, filling in the instrument's rules, and adds every field error
    /// found to `details`, which it returns.
    ///
    /// # Errors
    /// The feed or the vault could not answer, or the instrument's rules are not loaded.
    pub async fn check(
        &self,
        record: &mut BotRecord,
        mut details: Vec<FieldError>,
    ) -> Result<Vec<FieldError>, AdmissionError> {
        details.extend(static_errors(record));
        let leverage_venue = keel_venues::registry::capabilities(record.venue).leverage;
        check_derivatives(record, leverage_venue, self.leverage_caps, &mut details);
        let feed = self.feed.and_then(|slot| slot.get()).ok_or(AskError::Gone { actor: "feed" })?;
        let query = GetInstrument { symbol: record.symbol.clone() };
        match ask(&feed, query, self.timeout, "feed").await? {
            Ok(filters) => {
                check_strategy(record, filters, &mut details);
                self.check_module(record, &mut details).await?;
            }
            Err(InstrumentError::UnknownSymbol) => {
                details.push(unknown_symbol(record.venue, &record.symbol));
            }
            Err(InstrumentError::Unavailable) => {
                return Err(AdmissionError::MarketDataUnavailable(record.venue));
            }
        }
        if record.mode == BotMode::Live
            && let Some(account) = record.exchange_account_id
        {
            let vault = self
                .vault
                .get()
                .filter(Addr::connected)
                .ok_or(AskError::Gone { actor: "vault" })?;
            let query = ListCredentials { user_id: record.user_id };
            let accounts = ask(&vault, query, self.timeout, "vault").await??;
            let venue = record.venue;
            let held = accounts.iter().find(|a| a.id == account && a.venue == venue.as_str());
            check_account(
                account,
                venue,
                held.map(|a| a.testnet),
                self.venue_testnet,
                &mut details,
            );
        }
        Ok(details)
    }

    /// Checks a `wasm` strategy against its module (on a blocking thread: it runs the module's
    /// `keel_init` under its caps).
    async fn check_module(
        &self,
        record: &BotRecord,
        details: &mut Vec<FieldError>,
    ) -> Result<(), AdmissionError> {
        if Modules::module_of(record).is_none() {
            return Ok(());
        }
        let (modules, user, spec, filters) =
            (self.modules.clone(), record.user_id, record.strategy.clone(), record.filters.clone());
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            modules.check_bot(user, &spec, &filters, &mut found).map(|()| found)
        })
        .await
        .map_err(|e| AdmissionError::Modules(ModulesError::Host(e.to_string())))??;
        details.extend(found);
        Ok(())
    }
}
