//! A slab of `Rc`s in one word per entry: `slab::Slab` spends two (a vacant
//! entry's next-free index beside the pointer), and the worker's registry
//! has one entry per connection, every parked one included. Vacant keys
//! wait in a separate list instead.

use std::rc::Rc;

pub(crate) struct RcSlab<T> {
    entries: Vec<Option<Rc<T>>>,
    /// Keys of vacant entries, reused last in, first out.
    vacant: Vec<u32>,
}

impl<T> Default for RcSlab<T> {
    fn default() -> Self {
        RcSlab {
            entries: Vec::new(),
            vacant: Vec::new(),
        }
    }
}

impl<T> RcSlab<T> {
    /// Stores `value` and returns its key (below `u32::MAX`).
    pub fn insert(&mut self, value: Rc<T>) -> usize {
        match self.vacant.pop() {
            Some(key) => {
                self.entries[key as usize] = Some(value);
                key as usize
            }
            None => {
                assert!(self.entries.len() < u32::MAX as usize, "keys fit 32 bits");
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    /// Takes the value at `key` out. Panics if there is none.
    pub fn remove(&mut self, key: usize) -> Rc<T> {
        let value = self.entries[key].take().expect("an occupied key");
        self.vacant.push(key as u32);
        value
    }

    pub fn get(&self, key: usize) -> Option<&Rc<T>> {
        self.entries.get(key)?.as_ref()
    }

    pub fn len(&self) -> usize {
        self.entries.len() - self.vacant.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rc<T>> {
        self.entries.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_and_entries_are_one_word() {
        let mut s = RcSlab::default();
        let (a, b) = (s.insert(Rc::new(1)), s.insert(Rc::new(2)));
        assert_eq!((a, b), (0, 1));
        assert_eq!(*s.remove(a), 1);
        assert_eq!(s.len(), 1);
        assert!(s.get(a).is_none());
        assert_eq!(s.insert(Rc::new(3)), a);
        assert_eq!(s.iter().map(|v| **v).sum::<i32>(), 5);
        assert_eq!(std::mem::size_of::<Option<Rc<u64>>>(), 8);
    }
}
