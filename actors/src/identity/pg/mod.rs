//! Identity in Postgres, for cluster mode with `cluster.postgres_url`: the same operations as
//! the sled trees, shared by every node. Each acknowledged write is committed in Postgres before
//! the call returns.

mod invites;
mod sessions;
mod users;

pub use invites::PgInvites;
pub use sessions::{PgSessions, REVOCATION_OVERLAP, REVOCATION_POLL, REVOCATION_STALE};
pub use users::PgUsers;

#[cfg(test)]
mod tests;
