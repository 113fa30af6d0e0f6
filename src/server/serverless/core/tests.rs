use super::*;

fn limits() -> Limits {
    Limits {
        max_runners: 3,
        slots: 10,
        min_idle: 0,
        useful_life: Duration::from_secs(60),
        start_timeout: Duration::from_secs(5),
        idle_after: Duration::from_secs(6),
    }
}

fn keys() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("r{n}")
    }
}

fn live(core: &mut PoolCore, now: Instant, placed: &[u32]) {
    for (r, p) in core.runners.iter_mut().zip(placed) {
        r.placed = *p;
    }
    let keys: Vec<String> = core.runners.iter().map(|r| r.key.clone()).collect();
    for k in keys {
        core.registered(&k, now);
    }
}

#[test]
fn demand_starts_enough_runners_for_its_slots_and_no_more_than_allowed() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(limits(), 2);
    let mut key = keys();
    assert!(core.plan(t0, &mut key).is_empty(), "no demand, no start");
    core.report_waiting(0, 1);
    let first = core.plan(t0, &mut key);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].deadline, t0 + Duration::from_secs(5));
    assert!(
        core.plan(t0, &mut key).is_empty(),
        "the start in flight covers it"
    );
    core.report_waiting(1, 15);
    assert_eq!(
        core.plan(t0, &mut key).len(),
        1,
        "16 actors: two runners of 10"
    );
    core.report_waiting(1, 99);
    assert_eq!(core.plan(t0, &mut key).len(), 1, "max_runners 3");
    assert_eq!(core.counts(), (3, 0, 0));
    assert_eq!(core.counters.starts, 3);
}

#[test]
fn a_failed_start_backs_off_doubling_and_fails_waiters_until_then() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(limits(), 1);
    let mut key = keys();
    core.report_waiting(0, 1);
    let order = core.plan(t0, &mut key).remove(0);
    assert_eq!(core.failing(t0), None, "a start is in flight");
    core.start_failed(&order.key, 1, "connection refused".into(), t0);
    assert_eq!(core.failing(t0), Some("connection refused"));
    assert!(core.plan(t0, &mut key).is_empty(), "backing off");
    let t1 = t0 + BACKOFF_INITIAL;
    assert_eq!(core.failing(t1), None, "the backoff is over");
    let again = core.plan(t1, &mut key).remove(0);
    core.start_failed(&again.key, 2, "timeout".into(), t1);
    assert!(
        core.plan(t1 + BACKOFF_INITIAL, &mut key).is_empty(),
        "doubled"
    );
    let t2 = t1 + BACKOFF_INITIAL * 2;
    let ok = core.plan(t2, &mut key).remove(0);
    assert!(core.registered(&ok.key, t2 + Duration::from_millis(100)));
    assert_eq!(core.failing(t2 + BACKOFF_MAX), None);
    assert_eq!(core.counters.failures, [0, 1, 1, 0]);
    assert_eq!(
        core.last_error.as_deref(),
        Some("timeout"),
        "kept for status"
    );
    assert!(!core.registered("unknown", t2), "not a start of ours");
}

#[test]
fn a_runner_is_retired_at_its_useful_life_and_replaced_ahead_of_it() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(limits(), 1);
    let mut key = keys();
    core.report_waiting(0, 4);
    let _ = core.plan(t0, &mut key);
    live(&mut core, t0 + Duration::from_millis(200), &[4]);
    assert_eq!(
        core.lead(),
        Duration::from_millis(1200),
        "twice the smoothed 0.6 s"
    );
    let before = t0 + Duration::from_secs(59);
    assert!(core.retirements(before).is_empty());
    let replacement = core.plan(before, &mut key);
    assert_eq!(
        replacement.len(),
        1,
        "its 4 actors need a runner before it retires"
    );
    let at = t0 + Duration::from_secs(60);
    assert_eq!(core.retirements(at), [("r1".to_string(), Retire::Lifespan)]);
    assert_eq!(core.counts(), (1, 0, 1));
    core.ended("r1");
    assert_eq!(core.counters.died_early, 0, "it was retired");
    assert_eq!(core.counters.lifespan_drains, 1);
}

#[test]
fn idle_runners_retire_above_min_idle_and_a_dead_one_is_counted() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(
        Limits {
            min_idle: 1,
            ..limits()
        },
        1,
    );
    let mut key = keys();
    assert_eq!(
        core.plan(t0, &mut key).len(),
        1,
        "min_idle_runners starts one"
    );
    core.report_waiting(0, 11);
    assert_eq!(
        core.plan(t0, &mut key).len(),
        1,
        "11 actors beyond the first's 10"
    );
    live(&mut core, t0, &[5, 6]);
    core.report_waiting(0, 0);
    let t1 = t0 + Duration::from_secs(1);
    assert!(core.retirements(t1).is_empty(), "busy");
    live(&mut core, t1, &[0, 0]);
    assert!(core.retirements(t1).is_empty(), "idle from now");
    let t2 = t1 + limits().idle_after;
    assert_eq!(core.retirements(t2), [("r1".to_string(), Retire::Idle)]);
    assert!(
        core.retirements(t2 + limits().idle_after).is_empty(),
        "one stays"
    );
    core.ended("r2");
    assert_eq!(core.counters.died_early, 1, "live and not retired");
}

#[test]
fn with_no_demand_and_no_min_idle_the_pool_scales_to_zero() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(limits(), 1);
    let mut key = keys();
    core.report_waiting(0, 1);
    let _ = core.plan(t0, &mut key);
    live(&mut core, t0, &[0]);
    let later = t0 + limits().idle_after;
    let _ = core.retirements(t0);
    assert_eq!(core.retirements(later).len(), 1);
    core.ended("r1");
    assert_eq!(core.counts(), (0, 0, 0));
    assert!(core.plan(later, &mut key).is_empty());
}

#[test]
fn the_idle_period_follows_the_lifespan() {
    assert_eq!(idle_after(Duration::from_secs(4)), Duration::from_secs(1));
    assert_eq!(
        idle_after(Duration::from_secs(120)),
        Duration::from_secs(12)
    );
    assert_eq!(
        idle_after(Duration::from_secs(900)),
        Duration::from_secs(30)
    );
}

#[test]
fn a_removed_pool_starts_nothing_and_retires_its_runners() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(
        Limits {
            min_idle: 1,
            ..limits()
        },
        1,
    );
    let mut key = keys();
    assert_eq!(core.plan(t0, &mut key).len(), 1, "min_idle_runners");
    live(&mut core, t0, &[0]);
    core.remove();
    core.report_waiting(0, 5);
    assert!(
        core.plan(t0, &mut key).is_empty(),
        "no start for a removed pool"
    );
    assert!(!core.is_gone(), "its runner is still there");
    assert_eq!(core.retirements(t0), [("r1".to_string(), Retire::Removed)]);
    let end = t0 + limits().useful_life;
    assert!(
        core.plan(end, &mut key).is_empty(),
        "no replacement at its lifespan"
    );
    core.ended("r1");
    assert!(core.is_gone());
    core.restore();
    assert!(!core.is_gone(), "configured again");
    assert_eq!(core.plan(end, &mut key).len(), 1);
}

#[test]
fn at_max_runners_the_replacement_is_started_ahead_of_the_retirement() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(
        Limits {
            max_runners: 1,
            ..limits()
        },
        1,
    );
    let mut key = keys();
    core.report_waiting(0, 4);
    assert_eq!(core.plan(t0, &mut key).len(), 1);
    live(&mut core, t0 + Duration::from_millis(200), &[4]);
    let mid = t0 + Duration::from_secs(30);
    assert!(core.plan(mid, &mut key).is_empty(), "at the cap");
    let before = t0 + Duration::from_secs(59);
    assert_eq!(
        core.plan(before, &mut key).len(),
        1,
        "an expiring runner does not hold its replacement back"
    );
    assert!(
        core.plan(before, &mut key).is_empty(),
        "starting and non-expiring runners stay bounded"
    );
}

#[test]
fn a_live_runner_with_no_tunnel_left_offers_no_slots() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(
        Limits {
            max_runners: 1,
            ..limits()
        },
        1,
    );
    let mut key = keys();
    core.report_waiting(0, 1);
    assert_eq!(core.plan(t0, &mut key).len(), 1);
    live(&mut core, t0, &[0]);
    core.report_waiting(0, 1);
    assert!(core.plan(t0, &mut key).is_empty(), "its free slots");
    core.runners[0].connected = false;
    assert_eq!(
        core.plan(t0, &mut key).len(),
        1,
        "its tunnels are gone: a start for the waiting actor"
    );
}

#[test]
fn retiring_runners_still_holding_their_request_bound_new_starts() {
    let t0 = Instant::now();
    let mut core = PoolCore::new(
        Limits {
            max_runners: 1,
            ..limits()
        },
        1,
    );
    let mut key = keys();
    core.report_waiting(0, 1);
    assert_eq!(core.plan(t0, &mut key).len(), 1);
    live(&mut core, t0, &[0]);
    // Idle: retired, but its function ignores the drain (the request stays).
    let t1 = t0 + limits().idle_after;
    let _ = core.retirements(t0);
    assert_eq!(core.retirements(t1).len(), 1);
    core.report_waiting(0, 1);
    assert_eq!(core.plan(t1, &mut key).len(), 1, "one beside it");
    live(&mut core, t1, &[0, 0]);
    let t2 = t1 + limits().idle_after;
    let _ = core.retirements(t1);
    assert_eq!(core.retirements(t2).len(), 1);
    core.report_waiting(0, 1);
    assert!(
        core.plan(t2, &mut key).is_empty(),
        "2 × max_runners requests open: no more until one ends"
    );
    core.ended("r1");
    assert_eq!(core.plan(t2, &mut key).len(), 1);
}
