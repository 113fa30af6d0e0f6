//! Which runner a starting actor goes to: the least loaded runner of its
//! pool that offers the actor and has room, away from a runner it is
//! leaving if another can take it.

use std::rc::Rc;

use super::unavailable::Unavailable;
use crate::server::tunnels::{Tunnel, TunnelTable};

pub(crate) fn choose_tunnel(
    tunnels: &TunnelTable,
    name: &str,
    pool: &str,
    avoid: Option<&str>,
) -> Result<Rc<Tunnel>, Unavailable> {
    let in_pool = tunnels.in_pool(pool);
    if in_pool.is_empty() {
        return Err(Unavailable::NoRunner { pool: pool.into() });
    }
    if !in_pool.iter().any(|t| t.runs(name)) {
        return Err(Unavailable::UnknownActor { name: name.into() });
    }
    let placeable = || in_pool.iter().filter(|t| t.can_place(name));
    // Somewhere other than `avoid` if possible, else there after all.
    placeable()
        .filter(|t| avoid != Some(t.runner_key.as_str()))
        .min_by_key(|t| t.placed())
        .or_else(|| placeable().min_by_key(|t| t.placed()))
        .cloned()
        .ok_or_else(|| Unavailable::NoCapacity {
            pool: pool.into(),
            name: name.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::registry::Registry;
    use std::time::Instant;

    fn add(table: &TunnelTable, key: &str, pool: &str, capacity: u32) -> Rc<Tunnel> {
        let registry = Rc::new(Registry::new(Rc::default()));
        let control = registry.register(Instant::now()).control.clone();
        let names = vec!["chat".to_string()];
        let t = Tunnel::new(key.into(), pool.into(), capacity, names, control, 1 << 20);
        let t = Rc::new(t);
        table.insert(&t);
        t
    }

    fn refusal(table: &TunnelTable, name: &str) -> Unavailable {
        match choose_tunnel(table, name, "default", None) {
            Ok(t) => panic!("placed on {}", t.runner_key),
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

    #[test]
    fn least_loaded_first_and_away_from_the_avoided_runner() {
        let table = TunnelTable::default();
        let a = add(&table, "a", "default", 5);
        let b = add(&table, "b", "default", 5);
        a.add_placed();
        let chosen = choose_tunnel(&table, "chat", "default", None).unwrap();
        assert!(Rc::ptr_eq(&chosen, &b));
        let chosen = choose_tunnel(&table, "chat", "default", Some("b")).unwrap();
        assert!(Rc::ptr_eq(&chosen, &a));
        assert!(b.start_draining());
        let chosen = choose_tunnel(&table, "chat", "default", Some("a")).unwrap();
        assert!(Rc::ptr_eq(&chosen, &a), "a draining runner takes nothing");
    }
}
