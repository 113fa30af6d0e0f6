//! An actor's states and transitions, without sockets.

use super::*;
use crate::server::conn::registry::Registry;
use crate::server::tunnels::load::RunnerLoad;

fn tunnel() -> Rc<Tunnel> {
    let registry = Rc::new(Registry::new(Rc::default()));
    let control = registry.register(Instant::now()).control.clone();
    let load = std::sync::Arc::new(RunnerLoad::new(10));
    let names = vec!["chat".into()];
    Rc::new(Tunnel::new(
        "r1".into(),
        "default".into(),
        names,
        control,
        1 << 20,
        load,
    ))
}

fn slot(t: &Rc<Tunnel>) -> Reserved {
    Reserved::on(t).expect("room on the runner")
}

fn actor(now: Instant) -> Actor {
    counted_actor(now, &Arc::default())
}

fn counted_actor(now: Instant, stats: &Arc<WorkerStats>) -> Actor {
    let key = ["lobby".into()];
    Actor::new(
        "default",
        "chat",
        &key,
        "default".into(),
        now,
        1024,
        stats.clone(),
    )
}

const S: Duration = Duration::from_secs(1);

#[test]
fn a_start_counts_on_its_runner_until_the_actor_leaves() {
    let (t0, t) = (Instant::now(), tunnel());
    let a = actor(t0);
    a.begin_starting(7, slot(&t), t0, t0 + 10 * S);
    assert_eq!(
        (a.state(), a.id(), t.placed()),
        (ActorState::Starting, 7, 1)
    );
    assert!(a.is_on(&t) && !a.is_overdue(t0) && a.is_overdue(t0 + 10 * S));
    a.mark_running(t0);
    assert!(!a.is_overdue(t0 + 100 * S), "running has no deadline");
    a.begin_stopping(AfterStop::Sleep, 99, t0, t0 + 5 * S);
    assert_eq!(a.state().name(), "stopping");
    assert_eq!(a.hold_limit(), 99);
    a.mark_asleep();
    assert_eq!((a.state(), t.placed()), (ActorState::Asleep, 0));
    assert!(a.tunnel().is_none() && !a.is_overdue(t0 + 100 * S));
}

#[test]
fn placing_leaves_the_runner_and_its_deadline_counts_from_the_backoff() {
    let (t0, t) = (Instant::now(), tunnel());
    let a = actor(t0);
    a.begin_starting(1, slot(&t), t0, t0 + 10 * S);
    let left = a.begin_placing(t0, t0 + 2 * S, 4096, 10 * S);
    assert!(left.is_some_and(|l| Rc::ptr_eq(&l, &t)));
    assert_eq!((a.state(), t.placed()), (ActorState::Placing, 0));
    assert!(a.tunnel().is_none());
    assert_eq!(a.hold_limit(), 4096);
    assert!(!a.may_start(t0) && a.may_start(t0 + 2 * S));
    assert!(!a.is_overdue(t0 + 11 * S) && a.is_overdue(t0 + 12 * S));
    // Starting again from Placing counts on the new runner only.
    a.begin_starting(2, slot(&t), t0 + 2 * S, t0 + 12 * S);
    assert_eq!(t.placed(), 1);
}

#[test]
fn waiters_learn_whether_it_runs() {
    let t0 = Instant::now();
    let a = actor(t0);
    let slot = a.wait_ready();
    assert!(a.has_waiters());
    a.mark_running(t0);
    assert!(!a.has_waiters());
    let b = actor(t0);
    let failed = b.wait_ready();
    b.add_conn(5);
    assert_eq!(b.discard("gone"), vec![5]);
    assert_eq!(b.last_refusal(), "gone");
    assert!(b.conns().is_empty());
    drop((slot, failed));
}

/// The worker's count of actors in each state, as `/metrics` sums it.
fn by_state(stats: &WorkerStats) -> Vec<(&'static str, u64)> {
    (0..ACTOR_STATES)
        .map(|i| (ActorState::NAMES[i], stats.actors.get(i)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn its_workers_count_follows_its_state_until_it_is_dropped() {
    let (t0, t, stats) = (Instant::now(), tunnel(), Arc::default());
    let a = counted_actor(t0, &stats);
    let b = counted_actor(t0, &stats);
    assert_eq!(by_state(&stats), [("asleep", 2)]);
    a.begin_starting(1, slot(&t), t0, t0 + S);
    assert_eq!(by_state(&stats), [("starting", 1), ("asleep", 1)]);
    a.mark_running(t0);
    a.begin_stopping(AfterStop::Migrate, 1, t0, t0 + S);
    assert_eq!(by_state(&stats), [("migrating", 1), ("asleep", 1)]);
    a.begin_placing(t0, t0, 1, S);
    assert_eq!(by_state(&stats), [("placing", 1), ("asleep", 1)]);
    drop(a);
    drop(b);
    assert_eq!(by_state(&stats), []);
}

#[test]
fn a_wake_and_a_move_are_measured_when_the_actor_runs_again() {
    let (t0, t, stats) = (Instant::now(), tunnel(), Arc::<WorkerStats>::default());
    let ms = Duration::from_millis(1);
    let a = counted_actor(t0, &stats);
    a.begin_starting(1, slot(&t), t0, t0 + S);
    a.mark_running(t0 + ms);
    assert_eq!(
        stats.wake_latency.snapshot().count(),
        0,
        "a first start is no wake"
    );
    // Asleep; a message wakes it (a second trigger does not restart the clock).
    a.begin_stopping(AfterStop::Sleep, 1, t0, t0 + S);
    a.mark_asleep();
    a.note_wake(t0 + 10 * ms);
    a.note_wake(t0 + 20 * ms);
    a.begin_placing(t0, t0, 1, S);
    a.begin_starting(2, slot(&t), t0, t0 + S);
    a.mark_running(t0 + 13 * ms);
    let wake = stats.wake_latency.snapshot();
    assert_eq!((wake.count(), wake.sum_micros), (1, 3_000));
    // Moved: from the stop on the old runner to running on the next.
    a.begin_stopping(AfterStop::Migrate, 1, t0 + S, t0 + 2 * S);
    a.begin_placing(t0 + S, t0 + S, 1, S);
    a.begin_starting(3, slot(&t), t0 + S, t0 + 2 * S);
    a.mark_running(t0 + S + 40 * ms);
    let moved = stats.migration_pause.snapshot();
    assert_eq!((moved.count(), moved.sum_micros), (1, 40_000));
    assert_eq!(
        stats.wake_latency.snapshot().count(),
        1,
        "no wake this time"
    );
}

#[test]
fn failures_back_off() {
    let t0 = Instant::now();
    let a = actor(t0);
    let policy = BackoffPolicy {
        initial: S,
        max: 10 * S,
        reset_after: 60 * S,
    };
    assert_eq!(a.record_failure(t0, &policy), Duration::ZERO);
    assert_eq!(a.record_failure(t0, &policy), S);
    assert_eq!(a.backoff().failures(t0, &policy), 2);
}
