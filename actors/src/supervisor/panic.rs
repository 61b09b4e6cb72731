//! Panics: logged, counted, and remembered for the supervisor.
//!
//! tokio catches a panic that unwinds out of an actor's handler and drops the actor on the same
//! thread right after. The hook below stores the panic message in a thread-local so the dying
//! actor's [`super::Lifeline`] can report *why* it died.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs Keel's panic hook once per process: logs the panic through `tracing`, counts it in
/// `keel_panics_total`, remembers its message for the supervisor, then runs the previous hook.
pub fn install_panic_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = payload_message(info.payload());
            let location =
                info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            tracing::error!(panic = %message, %location, "panic");
            metrics::counter!("keel_panics_total").increment(1);
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
            if tracing::dispatcher::has_been_set() {
                return;
            }
            previous(info);
        }));
    });
}

/// Takes the message of the last panic on this thread, if any.
pub(crate) fn take_last_panic() -> Option<String> {
    LAST_PANIC.with(|last| last.borrow_mut().take())
}

/// Runs code Keel does not trust not to panic (strategies, parsers of foreign input) and turns a
/// panic into an error with its message, so the calling actor can stop cleanly and be restarted.
///
/// # Errors
/// The message of the panic `f` raised.
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        // The hook already stored the message; the caller reports it explicitly instead.
        take_last_panic();
        payload_message(payload.as_ref())
    })
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_panic_returns_the_message() {
        install_panic_hook();
        assert_eq!(catch_panic(|| 5), Ok(5));
        let err = catch_panic(|| -> u32 { panic!("strategy blew up: {}", 42) }).unwrap_err();
        assert_eq!(err, "strategy blew up: 42");
        assert_eq!(take_last_panic(), None);
    }
}
