//! Supervision behaviour, with real actors and a real store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::mailbox::ask;
use crate::store::{Store, StoreConfig, trees};

const DEADLINE: Duration = Duration::from_secs(5);

/// Polls `check` until it holds or five seconds pass.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A counter whose value lives in the store; it panics on demand.
struct Counter {
    store: Store,
    count: u64,
    _lifeline: Lifeline,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Debug)]
struct Increment;
impl Query for Increment {
    type Answer = u64;
}

#[derive(Debug)]
struct Read;
impl Query for Read {
    type Answer = u64;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Explode;

impl Handler<Ask<Increment>> for Counter {
    type Result = ();
    fn handle(&mut self, ask: Ask<Increment>, _: &mut Context<Self>) {
        self.count += 1;
        let tree = self.store.tree(trees::META).unwrap();
        tree.insert(b"test_counter", &self.count.to_be_bytes()).unwrap();
        ask.reply(self.count);
    }
}

impl Handler<Ask<Read>> for Counter {
    type Result = ();
    fn handle(&mut self, ask: Ask<Read>, _: &mut Context<Self>) {
        ask.reply(self.count);
    }
}

impl Handler<Explode> for Counter {
    type Result = ();
    fn handle(&mut self, _: Explode, _: &mut Context<Self>) {
        panic!("counter exploded on purpose");
    }
}

impl Handler<Stop> for Counter {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Starts a [`Counter`] with its count read back from the store, and publishes its address.
struct CounterSpec {
    store: Store,
    current: Arc<Mutex<Option<Addr<Counter>>>>,
}

impl ChildSpec for CounterSpec {
    fn name(&self) -> &str {
        "counter"
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let tree = self.store.tree(trees::META).map_err(|e| StartError(e.to_string()))?;
        let count = tree
            .get(b"test_counter")
            .map_err(|e| StartError(e.to_string()))?
            .map(|raw| u64::from_be_bytes(raw.as_ref().try_into().unwrap()))
            .unwrap_or(0);
        let addr = Counter { store: self.store.clone(), count, _lifeline: lifeline }.start();
        *self.current.lock().unwrap() = Some(addr.clone());
        Ok(Box::new(addr))
    }
}

/// Collects what a supervisor escalates.
#[derive(Default)]
struct Parent {
    told: Arc<Mutex<Vec<ChildFailed>>>,
}
impl Actor for Parent {
    type Context = Context<Self>;
}
impl Handler<ChildFailed> for Parent {
    type Result = ();
    fn handle(&mut self, msg: ChildFailed, _: &mut Context<Self>) {
        self.told.lock().unwrap().push(msg);
    }
}

/// A child that panics as soon as it starts.
struct Doomed {
    _lifeline: Lifeline,
}
impl Actor for Doomed {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        panic!("doomed from the start");
    }
}
impl Handler<Stop> for Doomed {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
struct DoomedSpec;
impl ChildSpec for DoomedSpec {
    fn name(&self) -> &str {
        "doomed"
    }
    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        Ok(Box::new(Doomed { _lifeline: lifeline }.start()))
    }
}

/// A child that records when it stops, to check the stop order.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
    lifeline: Lifeline,
}
impl Actor for Recorder {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Context<Self>) {
        self.lifeline.stopped_on_request();
        self.log.lock().unwrap().push(self.name);
    }
}
impl Handler<Stop> for Recorder {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
struct RecorderSpec(&'static str, Arc<Mutex<Vec<&'static str>>>);
impl ChildSpec for RecorderSpec {
    fn name(&self) -> &str {
        self.0
    }
    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        Ok(Box::new(Recorder { name: self.0, log: self.1.clone(), lifeline }.start()))
    }
}

fn child_state(status: &SupervisorStatus, name: &str) -> (ChildState, u64) {
    let child = status.children.iter().find(|c| c.name == name).unwrap();
    (child.state.clone(), child.restarts)
}

#[actix_rt::test]
async fn a_panicking_child_comes_back_with_its_state_rebuilt_from_the_store() {
    install_panic_hook();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    let current = Arc::new(Mutex::new(None));
    let sup = Supervisor::new("root", RestartPolicy::default())
        .child(CounterSpec { store: store.clone(), current: current.clone() })
        .start();
    let counter = || current.lock().unwrap().clone().unwrap();
    eventually("counter started", async || current.lock().unwrap().is_some()).await;
    for expected in 1..=3 {
        let got = ask(&counter(), Increment, DEADLINE, "counter").await.unwrap();
        assert_eq!(got, expected);
    }
    let before = counter();
    before.do_send(Explode);
    eventually("counter restarted", async || {
        let status = ask(&sup, GetStatus, DEADLINE, "sup").await.unwrap();
        child_state(&status, "counter") == (ChildState::Running, 1)
    })
    .await;
    assert!(!before.connected(), "the old instance is dead");
    assert_eq!(ask(&counter(), Read, DEADLINE, "counter").await, Ok(3));
    // The restarted instance keeps counting from the rebuilt state.
    assert_eq!(ask(&counter(), Increment, DEADLINE, "counter").await, Ok(4));
}

#[actix_rt::test]
async fn a_child_that_stops_on_its_own_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
    let current = Arc::new(Mutex::new(None));
    let sup = Supervisor::new("root", RestartPolicy::default())
        .child(CounterSpec { store, current: current.clone() })
        .start();
    eventually("counter started", async || current.lock().unwrap().is_some()).await;
    current.lock().unwrap().clone().unwrap().do_send(Stop);
    eventually("counter restarted", async || {
        let status = ask(&sup, GetStatus, DEADLINE, "sup").await.unwrap();
        child_state(&status, "counter") == (ChildState::Running, 1)
    })
    .await;
}

#[actix_rt::test]
async fn a_child_that_panics_in_a_loop_is_given_up_on_and_the_parent_is_told() {
    install_panic_hook();
    let parent = Parent::default();
    let told = parent.told.clone();
    let parent = parent.start();
    let policy = RestartPolicy { max_restarts: 3, period: Duration::from_secs(10) };
    let sup =
        Supervisor::new("bots", policy).escalate_to(parent.recipient()).child(DoomedSpec).start();
    eventually("the parent is told", async || !told.lock().unwrap().is_empty()).await;
    let failure = told.lock().unwrap()[0].clone();
    assert_eq!(failure.supervisor, "bots");
    assert_eq!(failure.child, "doomed");
    assert_eq!(failure.reason, ExitReason::Panicked("doomed from the start".into()));
    let status = ask(&sup, GetStatus, DEADLINE, "sup").await.unwrap();
    let (state, restarts) = child_state(&status, "doomed");
    assert!(matches!(state, ChildState::Failed { .. }), "{state:?}");
    assert_eq!(restarts, 3, "exactly the budget was spent");
    assert!(!status.all_running());
    // No further restarts happen once it has failed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = ask(&sup, GetStatus, DEADLINE, "sup").await.unwrap();
    assert_eq!(child_state(&status, "doomed").1, 3);
    assert_eq!(told.lock().unwrap().len(), 1);
}

#[actix_rt::test]
async fn a_failure_in_a_nested_supervisor_reaches_the_root() {
    install_panic_hook();
    let parent = Parent::default();
    let told = parent.told.clone();
    let parent = parent.start();
    let root =
        Supervisor::new("root", RestartPolicy::default()).escalate_to(parent.recipient()).start();
    let inner = Supervisor::new(
        "feeds",
        RestartPolicy { max_restarts: 1, period: Duration::from_secs(10) },
    )
    .escalate_to(root.clone().recipient())
    .child(DoomedSpec)
    .start();
    eventually("the root's parent is told", async || !told.lock().unwrap().is_empty()).await;
    let status = ask(&root, GetStatus, DEADLINE, "root").await.unwrap();
    assert_eq!(status.escalated.len(), 1);
    assert_eq!(status.escalated[0].supervisor, "feeds");
    assert!(!status.all_running());
    drop(inner);
}

#[actix_rt::test]
async fn shutdown_stops_children_in_reverse_start_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sup = Supervisor::new("root", RestartPolicy::default())
        .child(RecorderSpec("store-writer", log.clone()))
        .child(RecorderSpec("feeds", log.clone()))
        .child(RecorderSpec("bots", log.clone()))
        .start();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = ask(&sup, Shutdown { deadline: DEADLINE }, DEADLINE, "sup").await.unwrap();
    assert_eq!(report.stopped, ["bots", "feeds", "store-writer"]);
    assert!(report.stuck.is_empty());
    assert_eq!(*log.lock().unwrap(), ["bots", "feeds", "store-writer"]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!sup.connected(), "the supervisor stops after its children");
}
