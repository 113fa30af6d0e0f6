//! Which runner a starting actor goes to: the least loaded runner of its
//! pool that offers the actor and has room, away from a runner it is
//! leaving if another can take it. The slot is taken on the runner at once
//! (runners are shared by every worker).

use std::rc::Rc;

use super::actor::Actor;
use super::unavailable::Unavailable;
use crate::server::tunnels::{Reserved, Tunnel, TunnelTable};

pub(crate) fn choose_tunnel(
    tunnels: &TunnelTable,
    actor: &Actor,
    avoid: Option<&str>,
) -> Result<Reserved, Unavailable> {
    let pool = actor.pool();
    let (name, pool) = (actor.name.as_str(), pool.as_str());
    let in_pool = tunnels.in_pool(&actor.ns, pool);
    if in_pool.is_empty() {
        return Err(Unavailable::NoRunner { pool: pool.into() });
    }
    if !in_pool.iter().any(|t| t.runs(name)) {
        return Err(Unavailable::UnknownActor { name: name.into() });
    }
    let mut candidates: Vec<&Rc<Tunnel>> = in_pool.iter().filter(|t| t.can_place(name)).collect();
    // Least loaded first; somewhere other than `avoid` if possible, else
    // there after all.
    candidates.sort_by_key(|t| (avoid == Some(t.runner_key.as_str()), t.placed()));
    candidates
        .into_iter()
        .find_map(Reserved::on)
        .ok_or_else(|| Unavailable::NoCapacity {
            pool: pool.into(),
            name: name.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::registry::Registry;
    use crate::server::tunnels::load::RunnerLoad;
    use std::time::Instant;

    fn add(table: &TunnelTable, key: &str, pool: &str, capacity: u32) -> Rc<Tunnel> {
        let registry = Rc::new(Registry::new(Rc::default()));
        let control = registry.register(Instant::now()).control.clone();
        let names = vec!["chat".to_string()];
        let load = std::sync::Arc::new(RunnerLoad::new(capacity));
        let t = Tunnel::new(key.into(), pool.into(), names, control, 1 << 20, load);
        let t = Rc::new(t);
        table.insert(&t);
        t
    }

    fn actor(ns: &str, name: &str) -> Actor {
        Actor::new(
            ns,
            name,
            &[],
            "default".into(),
            Instant::now(),
            0,
            Default::default(),
        )
    }

    fn refusal(table: &TunnelTable, name: &str) -> Unavailable {
        match choose_tunnel(table, &actor("default", name), None) {
            Ok(_) => panic!("placed"),
            Err(u) => u,
        }
    }

    #[test]
    fn errors_say_what_is_missing() {
        let table = TunnelTable::default();
        let err = refusal(&table, "chat");
        assert_eq!(err.kind(), "no_runner");
        add(&table, "a", "default", 0);
        let err = refusal(&table, "echo");
        assert_eq!(err.to_string(), "unknown_actor: unknown actor echo");
        let err = refusal(&table, "chat");
        assert_eq!(err.kind(), "no_capacity");
    }

    fn chosen(table: &TunnelTable, avoid: Option<&str>) -> Reserved {
        match choose_tunnel(table, &actor("default", "chat"), avoid) {
            Ok(r) => r,
            Err(u) => panic!("{u}"),
        }
    }

    fn is(r: &Reserved, t: &Rc<Tunnel>) -> bool {
        r.tunnel().is_some_and(|c| Rc::ptr_eq(c, t))
    }

    #[test]
    fn least_loaded_first_and_away_from_the_avoided_runner() {
        let table = TunnelTable::default();
        let a = add(&table, "a", "default", 5);
        let b = add(&table, "b", "default", 5);
        let kept = chosen(&table, Some("b")).keep();
        assert!(kept.is_some_and(|t| Rc::ptr_eq(&t, &a)));
        assert_eq!((a.placed(), b.placed()), (1, 0));
        assert!(is(&chosen(&table, None), &b), "the least loaded");
        assert_eq!(b.placed(), 0, "a reservation dropped unused is given back");
        assert!(b.start_draining());
        assert!(
            is(&chosen(&table, Some("a")), &a),
            "a draining runner takes nothing"
        );
    }

    #[test]
    fn only_runners_of_the_actors_namespace_take_it() {
        let table = TunnelTable::default();
        add(&table, "a", "default", 5);
        let err = choose_tunnel(&table, &actor("acme", "chat"), None).err();
        assert_eq!(err.map(|u| u.kind()), Some("no_runner"));
    }

    #[test]
    fn a_full_runner_takes_nothing() {
        let table = TunnelTable::default();
        let a = add(&table, "a", "default", 1);
        let first = chosen(&table, None).keep();
        assert!(first.is_some());
        assert_eq!(refusal(&table, "chat").kind(), "no_capacity");
        crate::server::tunnels::release(&a);
        assert!(is(&chosen(&table, None), &a));
    }
}
