//! What one actor hop and one fan-out delivery cost, each measured next to the raw tokio channel
//! doing the same job in the same run.
//!
//! - `hop_same_arbiter`: request/response to an actor on the caller's own arbiter, through
//!   [`keel_actors::mailbox::ask`] and through `Addr::send`, against a task answering over a tokio
//!   `mpsc` + `oneshot` pair on the same current-thread runtime; the baseline also runs once
//!   under the deadline timer `ask` arms, to separate the timer's cost from the actor's.
//! - `hop_cross_arbiter`: the same with the actor in another `Arbiter` (thread), and the baseline
//!   task on a second tokio runtime (configured like an Arbiter's) on its own thread. Requests
//!   come from a task on the System thread.
//! - `fanout_publish`: sender-side cost of [`Subscribers::publish`] to 100 subscriber actors
//!   against `try_send` to 100 tokio `mpsc` receivers, reported per delivery. Subscribers drain
//!   between bursts (untimed), and every event must be delivered, not dropped.
//! - `fanout_delivered`: the same, timed until every subscriber has handled every event.
//!
//! `cargo bench --bench actor_hop`; docs/PERFORMANCE.md discusses the numbers.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::SystemRunner;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keel_actors::fanout::Subscribers;
use keel_actors::mailbox::{Ask, Query, ask};
use tokio::sync::{mpsc, oneshot};

/// Deadline for `ask`. Never reached, but `ask` arms a timer for it on every call, as in
/// production, so its cost is part of the hop.
const DEADLINE: Duration = Duration::from_secs(5);
/// Mailbox capacity of every actor, and capacity of every baseline channel.
const CAPACITY: usize = 16;
/// Subscribers per fan-out.
const SUBSCRIBERS: usize = 100;
/// Events published back to back before the subscribers drain; below [`CAPACITY`], so a correct
/// run drops nothing.
const BURST: u64 = 8;
/// How long a drain may take before the bench gives up: a stuck subscriber is a bug, not a number.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// A request answered with its own number.
#[derive(Debug, Clone, Copy)]
struct Ping(u64);

impl Query for Ping {
    type Answer = u64;
}

impl Message for Ping {
    type Result = u64;
}

/// Answers [`Ping`] both ways Keel can ask an actor.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(CAPACITY);
    }
}

impl Handler<Ask<Ping>> for Echo {
    type Result = ();

    fn handle(&mut self, ask: Ask<Ping>, _: &mut Context<Self>) {
        let Ping(n) = ask.query;
        ask.reply(n);
    }
}

impl Handler<Ping> for Echo {
    type Result = u64;

    fn handle(&mut self, Ping(n): Ping, _: &mut Context<Self>) -> u64 {
        n
    }
}

/// The baseline's request: a number and where to send it back.
type EchoRequest = (u64, oneshot::Sender<u64>);

/// The baseline's server: a plain task answering over a oneshot.
async fn echo_task(mut requests: mpsc::Receiver<EchoRequest>) {
    while let Some((n, reply)) = requests.recv().await {
        let _ = reply.send(n);
    }
}

/// The baseline's client side, shaped like `ask`: `try_send`, then await the oneshot.
async fn channel_request(requests: &mpsc::Sender<EchoRequest>, n: u64) -> u64 {
    let (reply, answer) = oneshot::channel();
    requests.try_send((n, reply)).expect("one request in flight never fills the channel");
    answer.await.expect("the echo task answers")
}

/// [`channel_request`] under the same deadline timer `ask` arms, to tell the timer's cost from the
/// actor's.
async fn channel_request_with_deadline(requests: &mpsc::Sender<EchoRequest>, n: u64) -> u64 {
    tokio::time::timeout(DEADLINE, channel_request(requests, n))
        .await
        .expect("the echo task answers in time")
}

/// Times `iters` requests made one after another by a task on the System's arbiter, the way an
/// HTTP handler or another actor asks. (Asking from the `block_on` root future instead sends every
/// answer through the runtime's driver, an `epoll_wait` each, which costs both sides alike and
/// hides the hop: about 650 ns instead of 170 ns for the baseline.)
fn time_requests(
    system: &SystemRunner,
    iters: u64,
    mut request: impl AsyncFnMut(u64) -> u64 + 'static,
) -> Duration {
    system.block_on(async move {
        actix_rt::spawn(async move {
            let start = Instant::now();
            for n in 0..iters {
                black_box(request(black_box(n)).await);
            }
            start.elapsed()
        })
        .await
        .expect("the timed task runs to the end")
    })
}

/// The four request/response benches of one group: `ask`, `Addr::send`, and the two channel
/// baselines, all timed from a task on `system`.
fn hop_benches(
    c: &mut Criterion,
    name: &str,
    system: &actix_rt::SystemRunner,
    echo: &Addr<Echo>,
    requests: &mpsc::Sender<EchoRequest>,
) {
    let mut group = c.benchmark_group(name);
    group.bench_function("actor_ask", |b| {
        b.iter_custom(|iters| {
            let echo = echo.clone();
            time_requests(system, iters, async move |n| {
                ask(&echo, Ping(n), DEADLINE, "echo").await.expect("echo answers")
            })
        })
    });
    group.bench_function("actor_send", |b| {
        b.iter_custom(|iters| {
            let echo = echo.clone();
            time_requests(system, iters, async move |n| {
                echo.send(Ping(n)).await.expect("echo answers")
            })
        })
    });
    group.bench_function("baseline_mpsc_oneshot", |b| {
        b.iter_custom(|iters| {
            let requests = requests.clone();
            time_requests(system, iters, async move |n| channel_request(&requests, n).await)
        })
    });
    group.bench_function("baseline_mpsc_oneshot_deadline", |b| {
        b.iter_custom(|iters| {
            let requests = requests.clone();
            time_requests(system, iters, async move |n| {
                channel_request_with_deadline(&requests, n).await
            })
        })
    });
    group.finish();
}

fn hop_same_arbiter(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let echo = system.block_on(async { Echo.start() });
    let (requests, inbox) = mpsc::channel(CAPACITY);
    system.block_on(async {
        actix_rt::spawn(echo_task(inbox));
    });

    hop_benches(c, "hop_same_arbiter", &system, &echo, &requests);
}

fn hop_cross_arbiter(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let arbiter = Arbiter::new();
    let echo = system.block_on(async { Echo::start_in_arbiter(&arbiter.handle(), |_| Echo) });
    let (requests, inbox) = mpsc::channel(CAPACITY);
    let baseline_thread = std::thread::spawn(move || {
        // The same runtime an actix Arbiter runs: current-thread, I/O and timer drivers on. The
        // echo task is spawned, like an actor, rather than being the root future, whose wake-up
        // from another thread would skip the scheduler's queue.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("baseline runtime");
        runtime
            .block_on(async { tokio::spawn(echo_task(inbox)).await })
            .expect("the echo task ends when the channel closes");
    });

    hop_benches(c, "hop_cross_arbiter", &system, &echo, &requests);

    drop(requests);
    baseline_thread.join().expect("baseline thread");
    arbiter.stop();
    arbiter.join().expect("echo arbiter");
}

/// A market event, about the size of a trade tick.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
struct Trade {
    seq: u64,
    price: i64,
    quantity: i64,
}

/// Counts what it receives, nothing else.
struct Subscriber {
    handled: Arc<AtomicU64>,
}

impl Actor for Subscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(CAPACITY);
    }
}

impl Handler<Trade> for Subscriber {
    type Result = ();

    fn handle(&mut self, trade: Trade, _: &mut Context<Self>) {
        black_box((trade.seq, trade.price, trade.quantity));
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
}

/// The two ways to fan one event out to [`SUBSCRIBERS`] receivers on the System thread.
enum Fanout {
    Actors(Subscribers<usize, Trade>),
    Channels(Vec<mpsc::Sender<Trade>>),
}

impl Fanout {
    /// [`SUBSCRIBERS`] actors behind Keel's [`Subscribers`]. Call inside the System.
    fn actors(handled: &Arc<AtomicU64>) -> Self {
        let mut subscribers = Subscribers::default();
        for key in 0..SUBSCRIBERS {
            let handled = handled.clone();
            subscribers.subscribe(key, Subscriber { handled }.start().recipient());
        }
        Fanout::Actors(subscribers)
    }

    /// [`SUBSCRIBERS`] tasks, each draining its own bounded channel. Call inside the System.
    fn channels(handled: &Arc<AtomicU64>) -> Self {
        let senders = (0..SUBSCRIBERS)
            .map(|_| {
                let (sender, mut receiver) = mpsc::channel::<Trade>(CAPACITY);
                let handled = handled.clone();
                actix_rt::spawn(async move {
                    while let Some(trade) = receiver.recv().await {
                        black_box((trade.seq, trade.price, trade.quantity));
                        handled.fetch_add(1, Ordering::Relaxed);
                    }
                });
                sender
            })
            .collect();
        Fanout::Channels(senders)
    }

    /// Offers `trade` to every receiver without waiting; returns how many took it.
    fn publish(&mut self, trade: &Trade) -> usize {
        match self {
            Fanout::Actors(subscribers) => subscribers.publish(trade, |_, _| {}).delivered,
            Fanout::Channels(senders) => {
                senders.iter().filter(|sender| sender.try_send(trade.clone()).is_ok()).count()
            }
        }
    }
}

/// Yields to the receivers until `handled` reaches `target`.
async fn drain(handled: &AtomicU64, target: u64) {
    let started = Instant::now();
    while handled.load(Ordering::Relaxed) < target {
        assert!(started.elapsed() < DRAIN_DEADLINE, "subscribers stopped draining");
        tokio::task::yield_now().await;
    }
}

/// Publishes `iters` events in bursts of [`BURST`], draining after each, and returns the time
/// spent publishing (plus draining, when `include_drain`). Panics if any delivery was refused.
fn time_fanout(
    system: &SystemRunner,
    fanout: &mut Fanout,
    handled: &AtomicU64,
    iters: u64,
    include_drain: bool,
) -> Duration {
    system.block_on(async {
        let mut timed = Duration::ZERO;
        let mut published = 0;
        let mut delivered = 0;
        let mut target = handled.load(Ordering::Relaxed);
        while published < iters {
            let burst = BURST.min(iters - published);
            let start = Instant::now();
            for seq in published..published + burst {
                let trade = Trade { seq, price: 6_400_012, quantity: 25 };
                delivered += fanout.publish(black_box(&trade));
            }
            target += burst * SUBSCRIBERS as u64;
            if include_drain {
                drain(handled, target).await;
                timed += start.elapsed();
            } else {
                timed += start.elapsed();
                drain(handled, target).await;
            }
            published += burst;
        }
        assert_eq!(delivered as u64, iters * SUBSCRIBERS as u64, "a delivery was refused");
        timed
    })
}

fn fanout(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let handled = Arc::new(AtomicU64::new(0));
    let mut actors = system.block_on(async { Fanout::actors(&handled) });
    let mut channels = system.block_on(async { Fanout::channels(&handled) });

    for (name, include_drain) in [("fanout_publish", false), ("fanout_delivered", true)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
        group.bench_function("actor_subscribers_publish", |b| {
            b.iter_custom(|iters| time_fanout(&system, &mut actors, &handled, iters, include_drain))
        });
        group.bench_function("baseline_mpsc_try_send", |b| {
            b.iter_custom(|iters| {
                time_fanout(&system, &mut channels, &handled, iters, include_drain)
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Two noisy cores: enough samples for a stable median, few enough to finish in minutes.
    config = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = hop_same_arbiter, hop_cross_arbiter, fanout
}
criterion_main!(benches);
