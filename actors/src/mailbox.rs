//! Request/response to an actor with a deadline, answering "full" at once.
//!
//! actix's `Addr::send` parks the caller while the mailbox is full, so a request to an overloaded
//! actor waits for its whole deadline before failing. Keel's façade must instead answer a full
//! mailbox at once (503 `OVERLOADED`), so requests go through [`ask`]: the message travels with its
//! own reply channel via `try_send`, which fails immediately when the bounded mailbox is full.
//!
//! An actor answers by implementing `Handler<Ask<Q>>` and calling [`Ask::reply`] (or moving the
//! [`Replier`] into a future and replying later).

use std::fmt;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tokio::sync::oneshot;

/// A question an actor can be asked, and the type of its answer.
pub trait Query: Send + 'static {
    /// What the actor answers.
    type Answer: Send + 'static;
}

/// A [`Query`] in flight, carrying the channel its answer goes back on.
pub struct Ask<Q: Query> {
    /// The question.
    pub query: Q,
    replier: Replier<Q::Answer>,
}

impl<Q: Query + fmt::Debug> fmt::Debug for Ask<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ask").field("query", &self.query).finish_non_exhaustive()
    }
}

impl<Q: Query> Message for Ask<Q> {
    type Result = ();
}

impl<Q: Query> Ask<Q> {
    /// Answers now.
    pub fn reply(self, answer: Q::Answer) {
        self.replier.send(answer);
    }

    /// Splits the question from its reply channel, to answer from a future.
    pub fn into_parts(self) -> (Q, Replier<Q::Answer>) {
        (self.query, self.replier)
    }
}

/// The way back to whoever asked.
pub struct Replier<A>(oneshot::Sender<A>);

impl<A> fmt::Debug for Replier<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Replier")
    }
}

impl<A> Replier<A> {
    /// Sends the answer. If the asker gave up (deadline passed) the answer is dropped: the asker
    /// already answered its own caller with a timeout.
    pub fn send(self, answer: A) {
        let _ = self.0.send(answer);
    }
}

/// Why an [`ask`] got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The actor's mailbox is at capacity: it is overloaded right now.
    #[error("{actor} is overloaded")]
    Full {
        /// Which actor.
        actor: &'static str,
    },
    /// The actor did not answer before the deadline. For an order this means "outcome unknown".
    #[error("{actor} did not answer in time")]
    Timeout {
        /// Which actor.
        actor: &'static str,
    },
    /// The actor is gone (stopped, or died while handling the question); its supervisor is
    /// restarting it.
    #[error("{actor} is unavailable")]
    Gone {
        /// Which actor.
        actor: &'static str,
    },
}

/// Asks `addr` a question and waits at most `deadline` for the answer.
///
/// `actor` names the actor in errors and in the `keel_mailbox_full_total` and
/// `keel_actor_timeouts_total` metrics.
///
/// # Errors
/// [`AskError::Full`] immediately when the mailbox is full, [`AskError::Timeout`] after
/// `deadline`, [`AskError::Gone`] when the actor stopped or dropped the question.
pub async fn ask<A, Q>(
    addr: &Addr<A>,
    query: Q,
    deadline: Duration,
    actor: &'static str,
) -> Result<Q::Answer, AskError>
where
    A: Actor + Handler<Ask<Q>>,
    A::Context: ToEnvelope<A, Ask<Q>>,
    Q: Query,
{
    let (tx, rx) = oneshot::channel();
    let message = Ask { query, replier: Replier(tx) };
    match addr.try_send(message) {
        Ok(()) => {}
        Err(SendError::Full(_)) => {
            metrics::counter!("keel_mailbox_full_total", "actor" => actor).increment(1);
            return Err(AskError::Full { actor });
        }
        Err(SendError::Closed(_)) => return Err(AskError::Gone { actor }),
    }
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_dropped)) => Err(AskError::Gone { actor }),
        Err(_elapsed) => {
            metrics::counter!("keel_actor_timeouts_total", "actor" => actor).increment(1);
            Err(AskError::Timeout { actor })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `Echo(n)` with `n`, after sleeping `delay` if one is set.
    struct Echoer {
        delay: Option<Duration>,
        capacity: usize,
    }

    impl Actor for Echoer {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(self.capacity);
        }
    }

    #[derive(Debug)]
    struct Echo(u32);
    impl Query for Echo {
        type Answer = u32;
    }

    impl Handler<Ask<Echo>> for Echoer {
        // Atomic: the actor handles nothing else while it sleeps, like a busy actor.
        type Result = AtomicResponse<Self, ()>;
        fn handle(&mut self, ask: Ask<Echo>, _: &mut Context<Self>) -> Self::Result {
            let delay = self.delay;
            let (Echo(n), replier) = ask.into_parts();
            AtomicResponse::new(Box::pin(
                async move {
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    replier.send(n);
                }
                .into_actor(self),
            ))
        }
    }

    #[actix_rt::test]
    async fn an_answer_comes_back() {
        let addr = Echoer { delay: None, capacity: 16 }.start();
        assert_eq!(ask(&addr, Echo(7), Duration::from_secs(1), "echo").await, Ok(7));
    }

    #[actix_rt::test]
    async fn a_slow_actor_times_out() {
        let addr = Echoer { delay: Some(Duration::from_secs(5)), capacity: 16 }.start();
        let err = ask(&addr, Echo(1), Duration::from_millis(50), "echo").await;
        assert_eq!(err, Err(AskError::Timeout { actor: "echo" }));
    }

    #[actix_rt::test]
    async fn a_full_mailbox_is_refused_at_once() {
        // The actor is busy on its first message, so the next ones queue until the mailbox is
        // full.
        let addr = Echoer { delay: Some(Duration::from_secs(5)), capacity: 2 }.start();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = std::time::Instant::now();
        let mut refused = false;
        for n in 0..16 {
            let pending = ask(&addr, Echo(n), Duration::from_secs(10), "echo");
            match tokio::time::timeout(Duration::from_millis(20), pending).await {
                Ok(Err(AskError::Full { .. })) => {
                    refused = true;
                    break;
                }
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(_still_waiting) => {}
            }
        }
        assert!(refused, "the mailbox never reported full");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[actix_rt::test]
    async fn a_stopped_actor_is_gone() {
        let addr = Echoer { delay: None, capacity: 16 }.start();
        addr.do_send(Stop);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let err = ask(&addr, Echo(1), Duration::from_secs(1), "echo").await;
        assert_eq!(err, Err(AskError::Gone { actor: "echo" }));
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Stop;
    impl Handler<Stop> for Echoer {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
}
