//! Why a supervised actor went away.
//!
//! Supervisors decide on the kind of exit (a stop they asked for is not restarted), so the reason
//! is an enum rather than text. Its `Display` is the text operators already know from logs, the
//! `/health/ready` JSON and a failed bot's `status_reason`, and it serializes as that text.

use std::fmt;

use serde::{Serialize, Serializer};

/// Why a supervised actor exited, as its [`super::Lifeline`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It was asked to stop and did: not a failure.
    Requested,
    /// It stopped itself on purpose because it cannot go on (a caught strategy panic, a failed
    /// store write, a vanished supervisor); the text says why.
    Crashed(String),
    /// A panic unwound out of one of its handlers; the panic's message.
    Panicked(String),
    /// Its supervisor found its mailbox closed without having heard from its lifeline.
    MailboxClosed,
    /// It went away without saying why.
    Unexpected,
}

impl ExitReason {
    /// Whether this exit was asked for, so the supervisor must not restart it.
    pub fn is_requested(&self) -> bool {
        matches!(self, Self::Requested)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Requested => f.write_str("stopped on request"),
            Self::Crashed(reason) => f.write_str(reason),
            Self::Panicked(message) => write!(f, "panicked: {message}"),
            Self::MailboxClosed => f.write_str("mailbox closed"),
            Self::Unexpected => f.write_str("stopped unexpectedly"),
        }
    }
}

impl Serialize for ExitReason {
    /// As its text, so status JSON reads as it always has.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_reads_as_the_text_logs_and_status_have_always_shown() {
        let cases = [
            (ExitReason::Requested, "stopped on request"),
            (
                ExitReason::Crashed("store write failed: disk full".into()),
                "store write failed: disk full",
            ),
            (ExitReason::Panicked("boom".into()), "panicked: boom"),
            (ExitReason::MailboxClosed, "mailbox closed"),
            (ExitReason::Unexpected, "stopped unexpectedly"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(serde_json::to_value(&reason).unwrap(), serde_json::json!(text));
        }
    }

    #[test]
    fn only_a_requested_stop_counts_as_requested() {
        assert!(ExitReason::Requested.is_requested());
        for other in [
            ExitReason::Crashed("x".into()),
            ExitReason::Panicked("x".into()),
            ExitReason::MailboxClosed,
            ExitReason::Unexpected,
        ] {
            assert!(!other.is_requested(), "{other:?}");
        }
    }
}
