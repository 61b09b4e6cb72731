//! OTP-style supervision for actix actors.
//!
//! actix's own `Supervisor` restarts an actor only when it *stops*; an actor whose handler panics
//! is dropped by the runtime and nobody is told. Keel's [`Supervisor`] therefore learns of a
//! child's death two ways:
//! - the child owns a [`Lifeline`]; dropping it (which happens however the actor dies, including
//!   a panic unwinding out of a handler) tells the supervisor at once;
//! - as a backstop it checks every child's mailbox on a timer and treats a closed one as a death.
//!
//! A dead child is restarted through its [`ChildSpec`], which rebuilds its state (from the store).
//! Restarts are counted in a sliding window ([`RestartWindow`] under a [`RestartPolicy`]); past
//! the budget the child is marked failed and a [`ChildFailed`] goes to the supervisor's parent
//! instead of looping. Every restart increments `keel_actor_restarts_total{actor}`.
//!
//! The bot supervisor (`crate::bot::supervisor`) supervises its bot actors with the same pieces:
//! a [`Lifeline`] per bot, an [`ExitReason`] per death, a [`RestartWindow`] per bot.

mod exit;
mod lifeline;
mod panic;
mod restart;
mod slot;

use std::fmt;
use std::time::{Duration, Instant};

use actix::prelude::*;
pub use exit::ExitReason;
pub use lifeline::{ChildExited, ChildKey, Lifeline};
pub use panic::{catch_panic, install_panic_hook};
pub use restart::{RestartPolicy, RestartWindow};
use serde::Serialize;
pub use slot::AddressSlot;

use crate::mailbox::{Ask, Query};

/// How often a supervisor checks its children's mailboxes, in case a lifeline notice was lost.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often, while stopping, a supervisor looks whether a child has finished stopping.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// A supervisor's mailbox unless [`Supervisor::with_mailbox`] sets `mailboxes.supervisor`: small,
/// because only lifecycle and status messages go there.
pub const DEFAULT_MAILBOX: usize = 256;

/// Why a child could not be started.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// How to (re)start one child. Called again for every restart, so `start` must rebuild all of the
/// child's state from durable sources rather than keep it here.
pub trait ChildSpec: 'static {
    /// The child's name, used in logs, metrics and status.
    fn name(&self) -> &str;

    /// Starts a fresh instance that owns `lifeline` (usually as a field of the actor).
    ///
    /// # Errors
    /// The child cannot start now (its state failed to load). This counts against the restart
    /// budget like a crash.
    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError>;
}

/// What a supervisor needs of a running child.
pub trait ChildHandle: 'static {
    /// Whether its mailbox is still open.
    fn is_alive(&self) -> bool;
    /// Asks it to stop cleanly.
    fn stop(&self);
}

/// Asks an actor to stop cleanly. Every supervised actor handles it, usually with `ctx.stop()`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Stop;

impl<A> ChildHandle for Addr<A>
where
    A: Actor<Context = Context<A>> + Handler<Stop>,
{
    fn is_alive(&self) -> bool {
        self.connected()
    }

    fn stop(&self) {
        // A stop must get through even to a full mailbox, and it is rare: `do_send` is right here.
        self.do_send(Stop);
    }
}

/// Sent to a supervisor's parent when a child spent its restart budget.
#[derive(Debug, Clone, Message, Serialize)]
#[rtype(result = "()")]
pub struct ChildFailed {
    /// The supervisor that gave up.
    pub supervisor: String,
    /// The child it gave up on.
    pub child: String,
    /// The child's last exit reason.
    pub reason: ExitReason,
}

/// Asks a supervisor for the state of its children.
#[derive(Debug, Clone, Copy)]
pub struct GetStatus;
impl Query for GetStatus {
    type Answer = SupervisorStatus;
}

/// Asks a supervisor to stop its children in reverse start order, then itself. Answered when all
/// of them have stopped or `deadline` passed.
#[derive(Debug, Clone, Copy)]
pub struct Shutdown {
    /// How long to wait for the children altogether.
    pub deadline: Duration,
}
impl Query for Shutdown {
    type Answer = ShutdownReport;
}

/// What a [`Shutdown`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Children that stopped in time, in the order they stopped.
    pub stopped: Vec<String>,
    /// Children still running at the deadline.
    pub stuck: Vec<String>,
}

/// A child's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ChildState {
    /// Running normally.
    Running,
    /// Died and is being restarted.
    Restarting,
    /// Spent its restart budget; no longer restarted.
    Failed {
        /// The last exit reason, as text (readiness reports it).
        reason: String,
    },
    /// Stopped on request.
    Stopped,
}

/// One child as its supervisor sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ChildStatus {
    /// Its name.
    pub name: String,
    /// Its state.
    #[serde(flatten)]
    pub state: ChildState,
    /// Restarts since the supervisor started.
    pub restarts: u64,
}

/// A supervisor's view of its subtree.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorStatus {
    /// The supervisor's name.
    pub name: String,
    /// Its children, in start order.
    pub children: Vec<ChildStatus>,
    /// Failures its own children's subtrees escalated to it.
    pub escalated: Vec<ChildFailed>,
}

impl SupervisorStatus {
    /// Whether every child is running.
    pub fn all_running(&self) -> bool {
        self.children.iter().all(|c| c.state == ChildState::Running) && self.escalated.is_empty()
    }
}

struct Child {
    spec: Box<dyn ChildSpec>,
    handle: Option<Box<dyn ChildHandle>>,
    state: ChildState,
    generation: u64,
    window: RestartWindow,
    restarts: u64,
}

/// Supervises a fixed list of children with one [`RestartPolicy`].
pub struct Supervisor {
    name: String,
    policy: RestartPolicy,
    parent: Option<Recipient<ChildFailed>>,
    children: Vec<Child>,
    escalated: Vec<ChildFailed>,
    stopping: bool,
    lifeline: Option<Lifeline>,
    mailbox: usize,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor named `name`; add children with [`Supervisor::child`], then start it.
    pub fn new(name: impl Into<String>, policy: RestartPolicy) -> Self {
        Self {
            name: name.into(),
            policy,
            parent: None,
            children: Vec::new(),
            escalated: Vec::new(),
            stopping: false,
            lifeline: None,
            mailbox: DEFAULT_MAILBOX,
        }
    }

    /// Sets the capacity of the supervisor's mailbox (`mailboxes.supervisor`).
    pub fn with_mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity;
        self
    }

    /// Who hears about a child that spent its restart budget.
    pub fn escalate_to(mut self, parent: Recipient<ChildFailed>) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Makes this supervisor itself a supervised child, owning `lifeline`.
    pub fn with_lifeline(mut self, lifeline: Lifeline) -> Self {
        self.lifeline = Some(lifeline);
        self
    }

    /// Adds a child; children start in the order they are added and stop in reverse.
    pub fn child(self, spec: impl ChildSpec) -> Self {
        self.boxed_child(Box::new(spec))
    }

    /// Adds a child given as a trait object.
    pub fn boxed_child(mut self, spec: Box<dyn ChildSpec>) -> Self {
        self.children.push(Child {
            spec,
            handle: None,
            state: ChildState::Restarting,
            generation: 0,
            window: RestartWindow::new(self.policy),
            restarts: 0,
        });
        self
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let child = &mut self.children[index];
        child.generation += 1;
        let lifeline = Lifeline::new(index as ChildKey, child.generation, me.clone().recipient())
            .escalating_to(me.recipient());
        match child.spec.start(lifeline) {
            Ok(handle) => {
                child.handle = Some(handle);
                child.state = ChildState::Running;
                tracing::debug!(supervisor = %self.name, child = child.spec.name(), "child started");
            }
            Err(err) => {
                // The lifeline was dropped with the failed attempt and reports it as an exit; the
                // restart budget decides what happens next.
                tracing::warn!(supervisor = %self.name, child = child.spec.name(), error = %err,
                    "child failed to start");
                child.handle = None;
            }
        }
    }

    fn on_exit(&mut self, index: usize, reason: ExitReason, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let name = self.name.clone();
        let Some(child) = self.children.get_mut(index) else {
            return;
        };
        if matches!(child.state, ChildState::Failed { .. } | ChildState::Stopped) {
            return;
        }
        child.handle = None;
        let child_name = child.spec.name().to_owned();
        if !child.window.admit(Instant::now()) {
            let policy = child.window.policy();
            tracing::error!(supervisor = %name, child = %child_name, %reason,
                max_restarts = policy.max_restarts, period = ?policy.period,
                "child spent its restart budget; marking it failed and escalating");
            metrics::counter!("keel_actor_failures_total", "actor" => child_name.clone())
                .increment(1);
            child.state = ChildState::Failed { reason: reason.to_string() };
            let failure = ChildFailed { supervisor: name, child: child_name, reason };
            if let Some(parent) = &self.parent {
                parent.do_send(failure);
            }
            return;
        }
        tracing::warn!(supervisor = %name, child = %child_name, %reason, "restarting child");
        metrics::counter!("keel_actor_restarts_total", "actor" => child_name).increment(1);
        child.restarts += 1;
        child.state = ChildState::Restarting;
        self.start_child(index, ctx);
    }

    fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            name: self.name.clone(),
            children: self
                .children
                .iter()
                .map(|c| ChildStatus {
                    name: c.spec.name().to_owned(),
                    state: c.state.clone(),
                    restarts: c.restarts,
                })
                .collect(),
            escalated: self.escalated.clone(),
        }
    }

    /// Stops the children in reverse order, each waited for, within `deadline` altogether.
    fn stop_children(
        &mut self,
        deadline: Duration,
    ) -> impl ActorFuture<Self, Output = ShutdownReport> + 'static {
        self.stopping = true;
        let mut order: Vec<(String, Box<dyn ChildHandle>)> = Vec::new();
        for child in self.children.iter_mut().rev() {
            child.state = ChildState::Stopped;
            if let Some(handle) = child.handle.take() {
                order.push((child.spec.name().to_owned(), handle));
            }
        }
        let supervisor = self.name.clone();
        async move {
            let until = Instant::now() + deadline;
            let mut report = ShutdownReport::default();
            for (name, handle) in order {
                handle.stop();
                while handle.is_alive() && Instant::now() < until {
                    tokio::time::sleep(STOP_POLL_INTERVAL).await;
                }
                if handle.is_alive() {
                    tracing::warn!(%supervisor, child = %name, "child did not stop in time");
                    report.stuck.push(name);
                } else {
                    tracing::debug!(%supervisor, child = %name, "child stopped");
                    report.stopped.push(name);
                }
            }
            report
        }
        .into_actor(self)
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
        for index in 0..self.children.len() {
            self.start_child(index, ctx);
        }
        ctx.run_interval(LIVENESS_CHECK_INTERVAL, |this, ctx| {
            let dead: Vec<usize> = this
                .children
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    c.state == ChildState::Running
                        && c.handle.as_ref().is_some_and(|h| !h.is_alive())
                })
                .map(|(i, _)| i)
                .collect();
            for index in dead {
                this.on_exit(index, ExitReason::MailboxClosed, ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(lifeline) = &mut self.lifeline {
            lifeline.stopped_on_request();
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Ok(index) = usize::try_from(msg.child) else { return };
        let current = self.children.get(index).is_some_and(|c| c.generation == msg.generation);
        if current {
            self.on_exit(index, msg.reason, ctx);
        }
    }
}

impl Handler<ChildFailed> for Supervisor {
    type Result = ();

    /// A child supervisor gave up on one of its children: record it (readiness reports it) and
    /// pass it up.
    fn handle(&mut self, msg: ChildFailed, _: &mut Context<Self>) {
        if let Some(parent) = &self.parent {
            parent.do_send(msg.clone());
        }
        self.escalated.push(msg);
    }
}

impl Handler<Ask<GetStatus>> for Supervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetStatus>, _: &mut Context<Self>) {
        ask.reply(self.status());
    }
}

impl Handler<Ask<Shutdown>> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, ask: Ask<Shutdown>, _: &mut Context<Self>) -> Self::Result {
        let (Shutdown { deadline }, replier) = ask.into_parts();
        Box::pin(self.stop_children(deadline).map(|report, _, ctx| {
            replier.send(report);
            ctx.stop();
        }))
    }
}

impl Handler<Stop> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    /// Stopped as a child of another supervisor: stop the subtree first.
    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.stop_children(Duration::from_secs(5)).map(|_, _, ctx| ctx.stop()))
    }
}

/// A nested supervisor as a child: on every (re)start it builds its children afresh from
/// `children`, and escalates to the supervisor above it.
pub struct SupervisorSpec {
    name: String,
    policy: RestartPolicy,
    mailbox: usize,
    children: Box<dyn Fn() -> Vec<Box<dyn ChildSpec>>>,
}

impl fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorSpec").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SupervisorSpec {
    /// A nested supervisor named `name` over the children `children` builds.
    pub fn new(
        name: impl Into<String>,
        policy: RestartPolicy,
        children: impl Fn() -> Vec<Box<dyn ChildSpec>> + 'static,
    ) -> Self {
        Self { name: name.into(), policy, mailbox: DEFAULT_MAILBOX, children: Box::new(children) }
    }

    /// Sets the capacity of the supervisor's mailbox, for every (re)start.
    pub fn with_mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity;
        self
    }
}

impl ChildSpec for SupervisorSpec {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let mut supervisor =
            Supervisor::new(self.name.clone(), self.policy).with_mailbox(self.mailbox);
        if let Some(parent) = lifeline.escalation() {
            supervisor = supervisor.escalate_to(parent);
        }
        let supervisor = (self.children)().into_iter().fold(supervisor, Supervisor::boxed_child);
        Ok(Box::new(supervisor.with_lifeline(lifeline).start()))
    }
}

#[cfg(test)]
mod tests;
