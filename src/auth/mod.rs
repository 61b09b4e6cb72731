//! Identity at the edge: access tokens, the one `AuthUser` extractor, login throttling.

mod extractor;
mod throttle;
mod tokens;

pub use extractor::AuthUser;
pub use throttle::LoginThrottle;
pub use tokens::{AccessClaims, IssuedToken, TokenIssuer, TokenRejected, Verified, now_secs};
