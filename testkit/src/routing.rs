//! What a router test needs on the caller's side: a signer that signs as the vault does, and
//! orders as a live bot hands them over.

use futures_util::future::BoxFuture;
use keel_core::trading::{Order, OrderOrigin, OrderStatus, OrderType, Side};
use rust_decimal::Decimal;

use crate::hmac_sha256_hex;

/// A signer as the seam takes it (`&*signer` is a `keel_venues::routing::Signer`).
pub type TestSigner =
    Box<dyn Fn(String) -> BoxFuture<'static, Result<(String, String), String>> + Send + Sync>;

/// Signs as the vault does: HMAC-SHA256 of the payload with `secret`, hex, with `api_key`.
pub fn signer(api_key: &str, secret: &str) -> TestSigner {
    let (api_key, secret) = (api_key.to_owned(), secret.to_owned());
    Box::new(move |payload: String| {
        let signed = Ok((api_key.clone(), hmac_sha256_hex(secret.as_bytes(), payload.as_bytes())));
        Box::pin(async move { signed })
    })
}

/// A new order of bot 42 with our `client_order_id`, as a live bot sends it.
pub fn new_order(client_order_id: &str, side: Side, order_type: OrderType, qty: Decimal) -> Order {
    Order {
        id: 17,
        bot_id: 42,
        client_order_id: client_order_id.to_owned(),
        side,
        order_type,
        qty,
        filled_qty: Decimal::ZERO,
        avg_fill_price: Decimal::ZERO,
        status: OrderStatus::New,
        origin: OrderOrigin::Strategy,
        tag: 0,
        oco_with: None,
        venue_list: None,
        reason: None,
        created_ts: 0,
        updated_ts: 0,
    }
}
