//! The vault: the only component that ever holds a plaintext exchange secret.
//!
//! Credentials are stored as [`Envelope`]s (see [`envelope`]) in the `credentials` tree, keyed
//! by (user id, credential id), so every lookup is scoped to its owner by construction. Secrets
//! are opened only inside this actor, only to compute a signature, and wiped right after.
//! Callers get back views with a key hint, or signatures; never a secret.

pub mod envelope;
pub mod keys;
pub mod notify;
pub mod pg;
mod rotate;

use std::fmt;

use actix::prelude::*;
use orion::hazardous::mac::hmac::sha256::{HmacSha256, SecretKey as HmacKey};
pub use rotate::{RotationReport, rotate};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use self::envelope::{Binding, Envelope};
pub use self::keys::{KeyRing, MasterKey};
use crate::identity::now_ms;
use crate::mailbox::{Ask, Query};
use crate::store::{Store, StoreError, decode, encode, id_key, pair_key, trees};
use crate::supervisor::{AddressSlot, ChildHandle, ChildSpec, Lifeline, StartError, Stop};

/// The vault's mailbox unless [`Vault::with_mailbox`] sets `mailboxes.vault`. Signing is on the
/// order path, so it must absorb bursts.
pub const DEFAULT_MAILBOX: usize = 1024;

/// What went wrong in the vault. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No such credential for this user (also the answer for another user's credential).
    #[error("no such exchange account")]
    NotFound,
    /// The user has as many credentials as allowed.
    #[error("at most {0} exchange accounts per user")]
    Limit(usize),
    /// The configured master key is malformed.
    #[error("vault.master_key {0}")]
    InvalidMasterKey(String),
    /// An envelope is wrapped under a key the vault does not have.
    #[error(
        "credential wrapped under unknown master key {0}; configure it as vault.previous_master_key"
    )]
    UnknownKey(String),
    /// An envelope failed to authenticate: edited, or bound to another record.
    #[error("a stored credential failed to authenticate")]
    Tampered,
    /// The cipher or random source failed.
    #[error("cryptographic failure")]
    Crypto,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cluster mode: this node does not hold the user's lease (it is moving): retry.
    #[error("ownership is moving, retry")]
    Moving,
    /// Cluster mode: the system of record failed or did not answer; nothing was written.
    #[error("the system of record failed")]
    Record(#[from] crate::pg::RecordError),
    /// Cluster mode: this node's master key is not the one the cluster's credentials are
    /// sealed with (`keel_vault_key` holds the first node's check value).
    #[error(
        "vault.master_key is not the cluster's: every node must have the same vault master key \
         (the key check value recorded in Postgres by the first node differs from this key's)"
    )]
    KeyMismatch,
}

impl From<sled::Error> for VaultError {
    fn from(err: sled::Error) -> Self {
        Self::Store(StoreError::Sled(err))
    }
}

/// A stored exchange credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Its id.
    pub id: u64,
    /// Owner.
    pub user_id: u64,
    /// Venue id (`binance`, `binance_futures`).
    pub venue: String,
    /// The owner's name for it.
    pub label: String,
    /// First and last four characters of the API key.
    pub api_key_hint: String,
    /// Whether it is for the venue's testnet.
    pub testnet: bool,
    /// Created, ms since the epoch.
    pub created_at_ms: u64,
    /// The API key, encrypted (it is not secret on the wire, but it names the account).
    pub api_key: Envelope,
    /// The API secret, encrypted.
    pub api_secret: Envelope,
}

/// What callers may see of a credential.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CredentialView {
    /// Its id.
    pub id: u64,
    /// Venue id.
    pub venue: String,
    /// The owner's name for it.
    pub label: String,
    /// `vmPU…Eh8A`.
    pub api_key_hint: String,
    /// Testnet or not.
    pub testnet: bool,
    /// Created, ms since the epoch.
    pub created_at_ms: u64,
}

impl From<&CredentialRecord> for CredentialView {
    fn from(r: &CredentialRecord) -> Self {
        Self {
            id: r.id,
            venue: r.venue.clone(),
            label: r.label.clone(),
            api_key_hint: r.api_key_hint.clone(),
            testnet: r.testnet,
            created_at_ms: r.created_at_ms,
        }
    }
}

/// The first and last four characters of an API key, or just its last two when it is short.
pub fn key_hint(api_key: &str) -> String {
    let chars: Vec<char> = api_key.chars().collect();
    if chars.len() >= 12 {
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}…{tail}")
    } else {
        let tail: String = chars[chars.len().saturating_sub(2)..].iter().collect();
        format!("…{tail}")
    }
}

/// Store a new credential.
pub struct AddCredential {
    /// Owner.
    pub user_id: u64,
    /// Venue id, already validated.
    pub venue: String,
    /// Label, already validated.
    pub label: String,
    /// API key.
    pub api_key: SecretString,
    /// API secret.
    pub api_secret: SecretString,
    /// Testnet or not.
    pub testnet: bool,
}

impl fmt::Debug for AddCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddCredential")
            .field("user_id", &self.user_id)
            .field("venue", &self.venue)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Query for AddCredential {
    type Answer = Result<CredentialView, VaultError>;
}

/// A user's credentials, oldest first.
#[derive(Debug)]
pub struct ListCredentials {
    /// Owner.
    pub user_id: u64,
}
impl Query for ListCredentials {
    type Answer = Result<Vec<CredentialView>, VaultError>;
}

/// Delete one credential of a user.
#[derive(Debug)]
pub struct RemoveCredential {
    /// Owner.
    pub user_id: u64,
    /// The credential.
    pub credential_id: u64,
}
impl Query for RemoveCredential {
    type Answer = Result<(), VaultError>;
}

/// Delete every credential of a user (account deletion).
#[derive(Debug)]
pub struct RemoveUserCredentials {
    /// Owner.
    pub user_id: u64,
}
impl Query for RemoveUserCredentials {
    type Answer = Result<usize, VaultError>;
}

/// Sign `payload` (query string + body, as Binance defines it) with a credential's secret.
#[derive(Debug)]
pub struct Sign {
    /// Owner.
    pub user_id: u64,
    /// The credential.
    pub credential_id: u64,
    /// The exact bytes to sign.
    pub payload: String,
}
impl Query for Sign {
    type Answer = Result<Signed, VaultError>;
}

/// A signature and the API key to send with it (in `X-MBX-APIKEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The API key (public by design: it identifies, it does not authorise).
    pub api_key: String,
    /// Lowercase hex HMAC-SHA256 of the payload.
    pub signature: String,
}

/// HMAC-SHA256 of `payload` under `secret`, lowercase hex.
///
/// # Errors
/// [`VaultError::Crypto`] if the MAC cannot be computed.
pub fn hmac_sha256_hex(secret: &[u8], payload: &[u8]) -> Result<String, VaultError> {
    let key = HmacKey::try_from(secret).map_err(|_| VaultError::Crypto)?;
    let tag = HmacSha256::hmac(&key, payload).map_err(|_| VaultError::Crypto)?;
    Ok(hex::encode(tag.unprotected_as_ref::<[u8]>()))
}

/// The credentials tree, with envelope handling. Used by the actor and by `keel vault rotate`.
#[derive(Debug, Clone)]
pub struct Credentials {
    store: Store,
    tree: sled::Tree,
}

impl Credentials {
    /// Opens the tree.
    ///
    /// # Errors
    /// The store failed.
    pub fn new(store: Store) -> Result<Self, StoreError> {
        Ok(Self { tree: store.tree(trees::CREDENTIALS)?, store })
    }

    fn get(&self, user_id: u64, id: u64) -> Result<Option<CredentialRecord>, VaultError> {
        Ok(self.tree.get(pair_key(user_id, id))?.map(|raw| decode(&raw)).transpose()?)
    }

    fn list(&self, user_id: u64) -> Result<Vec<CredentialRecord>, VaultError> {
        self.tree.scan_prefix(id_key(user_id)).map(|entry| Ok(decode(&entry?.1)?)).collect()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = Result<CredentialRecord, VaultError>> + '_ {
        self.tree.iter().map(|entry| Ok(decode(&entry?.1)?))
    }

    pub(crate) fn put(&self, record: &CredentialRecord) -> Result<(), VaultError> {
        self.tree.insert(pair_key(record.user_id, record.id), encode(record)?)?;
        Ok(())
    }

    fn add(
        &self,
        ring: &KeyRing,
        add: &AddCredential,
        max: usize,
    ) -> Result<CredentialRecord, VaultError> {
        if self.tree.scan_prefix(id_key(add.user_id)).count() >= max {
            return Err(VaultError::Limit(max));
        }
        let record = Self::seal(ring, add, self.store.next_id()?)?;
        self.put(&record)?;
        Ok(record)
    }

    /// The record of a new credential `id`, its key and secret sealed and bound to it.
    fn seal(ring: &KeyRing, add: &AddCredential, id: u64) -> Result<CredentialRecord, VaultError> {
        let key = add.api_key.expose_secret();
        let seal = |field, value: &str| {
            Envelope::seal(
                ring,
                &Binding { user_id: add.user_id, credential_id: id, field },
                value.as_bytes(),
            )
        };
        let record = CredentialRecord {
            id,
            user_id: add.user_id,
            venue: add.venue.clone(),
            label: add.label.clone(),
            api_key_hint: key_hint(key),
            testnet: add.testnet,
            created_at_ms: now_ms(),
            api_key: seal("api_key", key)?,
            api_secret: seal("api_secret", add.api_secret.expose_secret())?,
        };
        Ok(record)
    }

    fn sign(&self, ring: &KeyRing, sign: &Sign) -> Result<Signed, VaultError> {
        let record = self.get(sign.user_id, sign.credential_id)?.ok_or(VaultError::NotFound)?;
        let binding = |field| Binding { user_id: record.user_id, credential_id: record.id, field };
        let api_key = record.api_key.open(ring, &binding("api_key"))?;
        let secret = record.api_secret.open(ring, &binding("api_secret"))?;
        let signature = hmac_sha256_hex(&secret, sign.payload.as_bytes())?;
        let api_key = String::from_utf8(api_key.to_vec()).map_err(|_| VaultError::Tampered)?;
        Ok(Signed { api_key, signature })
    }
}

/// The vault actor.
pub struct Vault {
    ring: std::sync::Arc<KeyRing>,
    credentials: Credentials,
    store: Store,
    max_per_user: usize,
    mailbox: usize,
    /// Cluster mode with `postgres_url`: the record credentials are written to first.
    pg: Option<pg::VaultRecord>,
    _lifeline: Option<Lifeline>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault").field("key_id", &self.ring.current().id()).finish_non_exhaustive()
    }
}

impl Vault {
    /// A vault over `store` with `ring`, allowing `max_per_user` credentials per user.
    ///
    /// # Errors
    /// The store failed.
    pub fn new(
        store: Store,
        ring: std::sync::Arc<KeyRing>,
        max_per_user: usize,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            ring,
            credentials: Credentials::new(store.clone())?,
            store,
            max_per_user,
            mailbox: DEFAULT_MAILBOX,
            pg: None,
            _lifeline: None,
        })
    }

    /// Sets the capacity of the vault's mailbox.
    pub fn with_mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity;
        self
    }

    /// Keeps credentials in the cluster's Postgres (the sled tree becomes the working copy).
    pub fn with_record(mut self, pg: Option<pg::VaultRecord>) -> Self {
        self.pg = pg;
        self
    }

    /// Replies after the store has made this handler's writes durable.
    fn reply_when_durable<Q: Query>(
        &self,
        replier: crate::mailbox::Replier<Q::Answer>,
        answer: Q::Answer,
        wrote: bool,
    ) -> ResponseActFuture<Self, ()>
    where
        Q::Answer: DurableAnswer,
    {
        let store = self.store.clone();
        Box::pin(
            async move {
                if wrote && let Err(err) = store.commit().await {
                    replier.send(Q::Answer::from_store_error(err));
                    return;
                }
                replier.send(answer);
            }
            .into_actor(self),
        )
    }
}

/// Answers that can carry a store error (so a failed flush is reported, never acknowledged).
pub trait DurableAnswer {
    /// The answer for a failed flush.
    fn from_store_error(err: StoreError) -> Self;
}

impl<T> DurableAnswer for Result<T, VaultError> {
    fn from_store_error(err: StoreError) -> Self {
        Err(VaultError::Store(err))
    }
}

impl Actor for Vault {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
        tracing::info!(key_id = self.ring.current().id(), "vault started");
    }
}

impl Handler<Ask<AddCredential>> for Vault {
    type Result = ResponseActFuture<Self, ()>;

    #[tracing::instrument(skip_all, fields(user_id = ask.query.user_id))]
    fn handle(&mut self, ask: Ask<AddCredential>, _: &mut Context<Self>) -> Self::Result {
        let (add, replier) = ask.into_parts();
        if let Some(pg) = self.pg.clone() {
            return self.add_in_record(pg, add, replier);
        }
        let answer = self
            .credentials
            .add(&self.ring, &add, self.max_per_user)
            .map(|r| CredentialView::from(&r));
        let wrote = answer.is_ok();
        self.reply_when_durable::<AddCredential>(replier, answer, wrote)
    }
}

impl Handler<Ask<ListCredentials>> for Vault {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, ask: Ask<ListCredentials>, _: &mut Context<Self>) -> Self::Result {
        let (q, replier) = ask.into_parts();
        if let Some(pg) = self.pg.clone() {
            return self.list_in_record(pg, q.user_id, replier);
        }
        let answer = self
            .credentials
            .list(q.user_id)
            .map(|records| records.iter().map(CredentialView::from).collect());
        replier.send(answer);
        Box::pin(actix::fut::ready(()))
    }
}

impl Handler<Ask<RemoveCredential>> for Vault {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, ask: Ask<RemoveCredential>, _: &mut Context<Self>) -> Self::Result {
        let (q, replier) = ask.into_parts();
        if let Some(pg) = self.pg.clone() {
            return self.remove_in_record(pg, q.user_id, q.credential_id, replier);
        }
        let answer = match self.credentials.tree.remove(pair_key(q.user_id, q.credential_id)) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(VaultError::NotFound),
            Err(err) => Err(VaultError::Store(err.into())),
        };
        let wrote = answer.is_ok();
        self.reply_when_durable::<RemoveCredential>(replier, answer, wrote)
    }
}

impl Handler<Ask<RemoveUserCredentials>> for Vault {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, ask: Ask<RemoveUserCredentials>, _: &mut Context<Self>) -> Self::Result {
        let (q, replier) = ask.into_parts();
        if let Some(pg) = self.pg.clone() {
            return self.remove_user_in_record(pg, q.user_id, replier);
        }
        let remove = || -> Result<usize, VaultError> {
            let keys: Vec<_> = self
                .credentials
                .tree
                .scan_prefix(id_key(q.user_id))
                .keys()
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?;
            for key in &keys {
                self.credentials.tree.remove(key).map_err(StoreError::from)?;
            }
            Ok(keys.len())
        };
        let answer = remove();
        self.reply_when_durable::<RemoveUserCredentials>(replier, answer, true)
    }
}

impl Handler<Ask<Sign>> for Vault {
    type Result = ();

    #[tracing::instrument(skip_all, fields(user_id = ask.query.user_id, credential_id = ask.query.credential_id))]
    fn handle(&mut self, ask: Ask<Sign>, _: &mut Context<Self>) {
        let answer = self.credentials.sign(&self.ring, &ask.query);
        if let Err(err) = &answer {
            tracing::warn!(error = %err, "signing failed");
        }
        ask.reply(answer);
    }
}

impl Handler<Stop> for Vault {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Where the vault's current address can be read; it changes when the vault is restarted.
pub type VaultAddress = AddressSlot<Vault>;

/// Starts the vault under a supervisor, publishing its current address.
pub struct VaultSpec {
    store: Store,
    ring: std::sync::Arc<KeyRing>,
    max_per_user: usize,
    mailbox: usize,
    address: VaultAddress,
    pg: Option<pg::VaultRecord>,
}

impl fmt::Debug for VaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSpec").finish_non_exhaustive()
    }
}

impl VaultSpec {
    /// A spec for a vault over `store` with `ring` and a mailbox of `mailbox` messages, and
    /// where its address will be published.
    pub fn new(
        store: Store,
        ring: KeyRing,
        max_per_user: usize,
        mailbox: usize,
    ) -> (Self, VaultAddress) {
        let address = VaultAddress::default();
        let ring = std::sync::Arc::new(ring);
        let spec = Self { store, ring, max_per_user, mailbox, address: address.clone(), pg: None };
        (spec, address)
    }

    /// Keeps credentials in the cluster's Postgres ([`Vault::with_record`]).
    pub fn with_record(mut self, pg: Option<pg::VaultRecord>) -> Self {
        self.pg = pg;
        self
    }
}

impl ChildSpec for VaultSpec {
    fn name(&self) -> &str {
        "vault"
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let mut vault = Vault::new(self.store.clone(), self.ring.clone(), self.max_per_user)
            .map_err(|e| StartError(e.to_string()))?
            .with_mailbox(self.mailbox)
            .with_record(self.pg.clone());
        vault._lifeline = Some(lifeline);
        let addr = vault.start();
        self.address.set(addr.clone());
        Ok(Box::new(addr))
    }
}

#[cfg(test)]
mod tests;
