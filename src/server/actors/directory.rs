//! Where a worker finds its actors: by name and key (every actor it knows,
//! asleep ones too), and by the id of their current incarnation (every
//! actor that is not asleep). Looking up by name and key allocates nothing.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use super::actor::Actor;
use crate::server::tunnels::Tunnel;

/// An actor in the by-name map, hashed and compared by its own namespace,
/// name and key: the map holds one pointer per actor, not a copy of them.
struct Named(Rc<Actor>);

/// A namespace, name and key to look up, owned or borrowed: lets the map be
/// queried with `(&str, &str, &[String])` without building a key.
trait KeyView {
    fn parts(&self) -> (&str, &str, &[String]);
}

impl KeyView for Named {
    fn parts(&self) -> (&str, &str, &[String]) {
        (&self.0.ns, &self.0.name, &self.0.key)
    }
}

impl KeyView for (&str, &str, &[String]) {
    fn parts(&self) -> (&str, &str, &[String]) {
        (self.0, self.1, self.2)
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for Named {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

// Owned and borrowed keys hash and compare through `parts` alike, as
// `Borrow` requires.
impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for Named {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl PartialEq for Named {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Named {}

#[derive(Default)]
pub(crate) struct Directory {
    by_key: RefCell<HashSet<Named>>,
    /// Every actor that is not asleep, by its current id.
    by_id: RefCell<HashMap<u64, Rc<Actor>>>,
}

impl Directory {
    pub fn get(&self, ns: &str, name: &str, key: &[String]) -> Option<Rc<Actor>> {
        let query: &dyn KeyView = &(ns, name, key);
        self.by_key.borrow().get(query).map(|n| n.0.clone())
    }

    /// Knows `actor` by its name and key (in place of another instance).
    pub fn insert(&self, actor: &Rc<Actor>) {
        self.by_key.borrow_mut().replace(Named(actor.clone()));
    }

    /// Forgets `actor` by name and key (unless another instance took its place).
    pub fn forget(&self, actor: &Rc<Actor>) {
        let query: &dyn KeyView = &(actor.ns.as_str(), actor.name.as_str(), actor.key.as_slice());
        let mut by_key = self.by_key.borrow_mut();
        if by_key.get(query).is_some_and(|a| Rc::ptr_eq(&a.0, actor)) {
            by_key.remove(query);
        }
    }

    /// Runs `f` on every actor this worker knows (`f` must not reach the
    /// directory).
    pub fn each(&self, mut f: impl FnMut(&Rc<Actor>)) {
        for actor in self.by_key.borrow().iter() {
            f(&actor.0);
        }
    }

    /// The actor is awake under id `id` (replacing its previous id `old`).
    pub fn set_live(&self, old: u64, id: u64, actor: &Rc<Actor>) {
        let mut by_id = self.by_id.borrow_mut();
        by_id.remove(&old);
        by_id.insert(id, actor.clone());
    }

    /// The actor is asleep or gone.
    pub fn set_not_live(&self, id: u64) {
        self.by_id.borrow_mut().remove(&id);
    }

    /// The live actor `id`, if it is on `tunnel`.
    pub fn live_on(&self, tunnel: &Rc<Tunnel>, id: u64) -> Option<Rc<Actor>> {
        let by_id = self.by_id.borrow();
        by_id.get(&id).filter(|a| a.is_on(tunnel)).cloned()
    }

    /// Every live actor.
    pub fn live(&self) -> Vec<Rc<Actor>> {
        self.by_id.borrow().values().cloned().collect()
    }

    pub fn has_live(&self) -> bool {
        !self.by_id.borrow().is_empty()
    }

    /// The actors on `tunnel`, oldest incarnation first.
    pub fn on_tunnel(&self, tunnel: &Rc<Tunnel>) -> Vec<Rc<Actor>> {
        let by_id = self.by_id.borrow();
        let mut actors: Vec<Rc<Actor>> = by_id
            .values()
            .filter(|a| a.is_on(tunnel))
            .cloned()
            .collect();
        actors.sort_by_key(|a| a.id());
        actors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn actor(name: &str, key: &[&str]) -> Rc<Actor> {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        Rc::new(Actor::new(
            "default",
            name,
            &key,
            "default".into(),
            Instant::now(),
            0,
            Default::default(),
        ))
    }

    #[test]
    fn lookup_by_borrowed_name_and_key() {
        let d = Directory::default();
        let a = actor("chat", &["room", "1"]);
        d.insert(&a);
        let key = vec!["room".to_string(), "1".to_string()];
        assert!(d
            .get("default", "chat", &key)
            .is_some_and(|f| Rc::ptr_eq(&f, &a)));
        assert!(d.get("default", "chat", &key[..1]).is_none());
        assert!(d.get("default", "echo", &key).is_none());
        assert!(d.get("acme", "chat", &key).is_none(), "another namespace");
        // A compound key is not its parts joined.
        assert!(d.get("default", "chat", &["room/1".to_string()]).is_none());
    }

    #[test]
    fn forgetting_leaves_a_newer_instance_alone() {
        let d = Directory::default();
        let old = actor("chat", &["a"]);
        let new = actor("chat", &["a"]);
        d.insert(&old);
        d.insert(&new);
        d.forget(&old);
        assert!(d.get("default", "chat", &["a".to_string()]).is_some());
        d.forget(&new);
        assert!(d.get("default", "chat", &["a".to_string()]).is_none());
    }

    #[test]
    fn live_actors_by_id() {
        let d = Directory::default();
        let a = actor("chat", &["a"]);
        d.set_live(0, 5, &a);
        assert!(d.has_live());
        d.set_live(5, 6, &a);
        assert_eq!(d.live().len(), 1);
        d.set_not_live(6);
        assert!(!d.has_live());
    }
}
