//! A chat room's broadcasts across a runner killed mid-batch: clients send
//! numbered messages, the runner dies (with the batch saved and its output
//! not sent, or at a random moment), the room is restored on another
//! runner, the gateway replays what was not acknowledged, and every member
//! sees every message exactly once, in one order, through `Broadcast`
//! frames.

mod common;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::child::Reaped;
use common::*;
use tether::runner::{BuiltinActors, KillSwitch, MemoryStore, SaveRequest, StateStore};

const TEXT: u8 = 1;
const MEMBERS: usize = 3;
/// Messages each member sends: enough batches for the kill from inside a
/// save, and a run long enough to spread three kill -9s over.
const PER_MEMBER: usize = 40;
const PER_MEMBER_KILL_9: usize = 300;

fn replay_config() -> tether::Config {
    let mut c = test_config();
    c.actors.start_timeout = Duration::from_secs(5);
    c.actors.idle_timeout = Duration::ZERO;
    c
}

/// The harness's store, but the save of the `after`th batch also kills
/// its runner: the runner dies with that batch saved and its output and
/// acknowledgements not sent, the window a `kill -9` can hit.
struct KillsAfterSave {
    inner: MemoryStore,
    after: usize,
    saves: AtomicUsize,
    kill: Arc<Mutex<Option<KillSwitch>>>,
}

impl StateStore for KillsAfterSave {
    fn load(&self, name: &str, key: &[String]) -> io::Result<Option<Vec<u8>>> {
        self.inner.load(name, key)
    }
    fn save(&self, name: &str, key: &[String], record: &[u8]) -> io::Result<()> {
        self.inner.save(name, key, record)
    }
    fn save_batch(&self, records: &[SaveRequest<'_>]) -> Vec<io::Result<()>> {
        let results = self.inner.save_batch(records);
        if records.is_empty() {
            return results; // a batch that changed no actor
        }
        if self.saves.fetch_add(1, Ordering::Relaxed) + 1 == self.after {
            if let Some(kill) = self.kill.lock().unwrap().as_ref() {
                kill.kill();
            }
        }
        results
    }
}

/// Next text message, or `None` once the connection ends or stays silent
/// past its read timeout.
fn next_text(ws: &mut RawWs) -> Option<String> {
    loop {
        let f = ws.recv()?;
        match f.opcode {
            TEXT => return Some(String::from_utf8(f.payload).unwrap()),
            9 => ws.send(true, 10, &f.payload),
            other => panic!("unexpected frame {other}: {f:?}"),
        }
    }
}

/// Member `me` sends its numbered messages, each once the room has
/// broadcast the previous one (so they span many batches), then reads
/// until it has seen every member's: what it saw, in order, and its
/// socket (kept open until the test ends, so the room lives on).
/// `progress` counts what every member has seen.
fn member(
    mut ws: RawWs,
    me: usize,
    per: usize,
    progress: Arc<AtomicUsize>,
) -> (Vec<String>, RawWs) {
    let mut seen = Vec::new();
    let mut read = |ws: &mut RawWs, until: &dyn Fn(&[String]) -> bool| {
        while !until(&seen) {
            match next_text(ws) {
                Some(t) => seen.push(t),
                None => panic!("member {me} waited in vain after {seen:?}"),
            }
            progress.fetch_add(1, Ordering::Relaxed);
        }
    };
    for n in 0..per {
        let line = format!("m{me} {n}");
        ws.send(true, TEXT, line.as_bytes());
        read(&mut ws, &|seen| seen.last() == Some(&line));
    }
    read(&mut ws, &|seen| seen.len() >= MEMBERS * per);
    // The answer to `/history` comes after everything the room sent
    // before it: a duplicate would come first. And the room's state holds
    // each message once: its history is the last lines everyone saw.
    ws.send(true, TEXT, b"/history");
    let history = next_text(&mut ws).expect("the room's history");
    let last = &seen[seen.len() - tether::runner::CHAT_HISTORY..];
    assert_eq!(history.split('\n').collect::<Vec<_>>(), last, "member {me}");
    (seen, ws)
}

/// The members of chat room `key`, connected.
fn connect_members(h: &Harness, key: &str) -> Vec<RawWs> {
    let path = format!("/actors/chat/{key}");
    (0..MEMBERS)
        .map(|_| RawWs::connect(h.client_addr, &path))
        .collect()
}

/// Each member on its own thread; `progress` counts what they have seen.
fn spawn_members(
    sockets: Vec<RawWs>,
    per: usize,
    progress: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<(Vec<String>, RawWs)>> {
    let members = sockets.into_iter().enumerate().map(|(me, ws)| {
        let progress = progress.clone();
        std::thread::spawn(move || member(ws, me, per, progress))
    });
    members.collect()
}

/// What each member saw (their sockets are closed after).
fn join(members: Vec<std::thread::JoinHandle<(Vec<String>, RawWs)>>) -> Vec<Vec<String>> {
    let done: Vec<_> = members.into_iter().map(|m| m.join().unwrap()).collect();
    done.into_iter().map(|(seen, _)| seen).collect()
}

/// Every member saw each message once, all in one order, each member's
/// own in the order it sent them.
#[track_caller]
fn assert_exactly_once_in_one_order(seen: &[Vec<String>], per: usize) {
    for (i, s) in seen.iter().enumerate() {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for line in s {
            *counts.entry(line).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "member {i} saw duplicates {twice:?}");
        assert_eq!(s.len(), MEMBERS * per, "member {i}");
        assert_eq!(s, &seen[0], "members {i} and 0 saw one order");
    }
    for m in 0..MEMBERS {
        let own: Vec<String> = seen[0]
            .iter()
            .filter(|l| l.starts_with(&format!("m{m} ")))
            .cloned()
            .collect();
        let sent: Vec<String> = (0..per).map(|n| format!("m{m} {n}")).collect();
        assert_eq!(own, sent, "member {m}'s messages in the order sent");
    }
}

#[test]
fn a_runner_killed_after_saving_a_batch_loses_no_broadcast_and_repeats_none() {
    let mut h = start_bare(replay_config());
    let kill = Arc::new(Mutex::new(None));
    let mut doomed = h.runner_options();
    doomed.state = Some(Arc::new(KillsAfterSave {
        inner: h.store.clone(),
        after: 25,
        saves: AtomicUsize::new(0),
        kill: kill.clone(),
    }));
    let i = h.add_runner(doomed, BuiltinActors);
    *kill.lock().unwrap() = Some(h.runner(i).kill_switch());
    // The room starts on the doomed runner (the only one); then a second.
    let sockets = connect_members(&h, "replayed");
    let o = h.runner_options();
    h.add_runner(o, BuiltinActors);
    let members = spawn_members(sockets, PER_MEMBER, &Arc::new(AtomicUsize::new(0)));
    let seen = join(members);
    assert_eq!(h.stat(|s| &s.failovers), 1, "the doomed runner died once");
    assert_exactly_once_in_one_order(&seen, PER_MEMBER);
    // One Broadcast frame per message reached the gateway: the room used
    // the one-frame path, and the resent batch was not counted twice.
    let total = (MEMBERS * PER_MEMBER) as u64;
    assert_eq!(h.stat(|s| &s.broadcasts), total);
    h.shutdown();
}

/// `tether runner` on the shared state directory, welcomed on every
/// worker; killed with SIGKILL when dropped.
fn runner_process(h: &Harness, key: &str, state_dir: &Path) -> Reaped {
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["runner", "--gateway", &h.runner_url(), "--key", key])
        .arg("--state-dir")
        .arg(state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = Reaped(child);
    wait_for(&format!("runner {key} on every worker"), || {
        let (_, list) = h.admin_json("/runners");
        let runners = list["runners"].as_array().cloned().unwrap_or_default();
        let me = runners.iter().find(|r| r["key"] == key);
        me.and_then(|r| r["tunnels"].as_u64()) == Some(2)
    });
    process
}

/// The key of the runner room `key` runs on, once it runs.
fn holder_of(h: &Harness, key: &str) -> Option<String> {
    let (_, status) = h.admin_json(&format!("/actors/chat/{key}"));
    let running = status["state"] == "running";
    running.then(|| status["runner"].as_str().map(str::to_owned))?
}

#[test]
fn kill_9_of_the_rooms_runner_process_again_and_again_loses_and_repeats_no_broadcast() {
    const KILLS: usize = 3;
    let h = start_bare(replay_config());
    let dir = std::env::temp_dir().join(format!("tether-bcast-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut runners: HashMap<String, Reaped> = HashMap::new();
    let mut started = 0;
    let mut start = |h: &Harness, runners: &mut HashMap<String, Reaped>| {
        started += 1;
        let key = format!("bcast-{started}"); // a key of its own each
        runners.insert(key.clone(), runner_process(h, &key, &dir));
    };
    start(&h, &mut runners);
    start(&h, &mut runners);
    let progress = Arc::new(AtomicUsize::new(0));
    let per = PER_MEMBER_KILL_9;
    let members = spawn_members(connect_members(&h, "killed"), per, &progress);
    // Everything every member will see, in all.
    let all = MEMBERS * MEMBERS * per;
    for k in 1..=KILLS {
        // Spread over the run: each kill once the room has moved on.
        wait_for("the room to move on", || {
            progress.load(Ordering::Relaxed) >= k * all / (KILLS + 1)
        });
        let mut holder = None;
        wait_for("the room to run", || {
            holder = holder_of(&h, "killed");
            holder.is_some()
        });
        let at = progress.load(Ordering::Relaxed);
        eprintln!("kill -9 {k}: after {at} of {all} deliveries");
        let mut victim = runners.remove(&holder.unwrap()).expect("one of ours");
        victim.0.kill().unwrap(); // SIGKILL
        let _ = victim.0.wait();
        start(&h, &mut runners);
    }
    let seen = join(members);
    assert_exactly_once_in_one_order(&seen, per);
    assert_eq!(h.stat(|s| &s.failovers), KILLS as u64, "one per kill");
    let total = (MEMBERS * per) as u64;
    assert_eq!(
        h.stat(|s| &s.broadcasts),
        total,
        "one Broadcast per message"
    );
    drop(runners);
    h.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
