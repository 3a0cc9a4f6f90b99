//! The keys whose state changed since the runtime last wrote its changelog records: each
//! stage's state (fan-out alarms, circuits, incidents) notes them as it changes, and the
//! runtime takes them at every transaction. An engine without a changelog (`replay`,
//! `bench`) notes none: the set would only grow.

use std::collections::BTreeSet;

/// Keys changed since the last [`Changes::take`], in key order.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    keys: BTreeSet<String>,
    /// Nothing is noted (no changelog to write).
    off: bool,
}

impl Changes {
    /// A set that notes nothing.
    pub fn off() -> Self {
        Changes {
            keys: BTreeSet::new(),
            off: true,
        }
    }

    /// Note `key` (a copy is made only the first time it is noted).
    pub fn note(&mut self, key: &str) {
        if !self.off && !self.keys.contains(key) {
            self.keys.insert(key.to_owned());
        }
    }

    /// Note `key`, given owned.
    pub fn note_owned(&mut self, key: String) {
        if !self.off {
            self.keys.insert(key);
        }
    }

    /// Forget `key` (its state was just read from the changelog).
    pub fn forget(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// The keys noted since the last call.
    pub fn take(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_noted_once_and_taken_in_order() {
        let mut c = Changes::default();
        c.note("b");
        c.note_owned("a".to_string());
        c.note("b");
        c.note("c");
        c.forget("c");
        assert_eq!(c.take().into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(c.take().is_empty());
    }

    #[test]
    fn a_set_that_is_off_notes_nothing() {
        let mut c = Changes::off();
        c.note("a");
        c.note_owned("b".to_string());
        assert!(c.take().is_empty());
    }
}
