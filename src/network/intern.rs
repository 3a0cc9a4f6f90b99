//! Interned strings for the inventory replica: each distinct identifier is stored once,
//! and everything that names it holds a 4-byte [`Sym`]. Strings are reference-counted, so
//! that an identifier no circuit uses any more (a deleted circuit, a re-routed path) is
//! freed and its slot reused: the replica never grows with inventory churn.
//!
//! Off-the-shelf interners (lasso, string-interner) never free a string, which a replica
//! fed by a compacted topic for years cannot afford; the lookup table here is hashbrown's
//! `HashTable`, keyed by the slot's text without storing it twice.

use std::hash::BuildHasher;
use std::num::NonZeroU32;

use hashbrown::HashTable;

/// An interned string: valid while the [`Interner`] holds a reference to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(NonZeroU32);

impl Sym {
    fn slot(self) -> usize {
        self.0.get() as usize - 1
    }

    fn of_slot(slot: usize) -> Option<Sym> {
        u32::try_from(slot + 1)
            .ok()
            .and_then(NonZeroU32::new)
            .map(Sym)
    }
}

#[derive(Debug, Clone)]
struct Slot {
    text: Box<str>,
    /// References held; 0 for a free slot.
    refs: u32,
}

/// Reference-counted string interner.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    slots: Vec<Slot>,
    free: Vec<Sym>,
    table: HashTable<Sym>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Interner {
    /// The symbol of `text` if it is interned; takes no reference.
    pub fn get(&self, text: &str) -> Option<Sym> {
        let hash = self.hasher.hash_one(text);
        self.table
            .find(hash, |s| &*self.slots[s.slot()].text == text)
            .copied()
    }

    /// The symbol of `text`, interning it if needed; takes one reference.
    ///
    /// # Panics
    /// When `u32::MAX - 1` distinct strings are held at once: at 16 bytes of slot each, the
    /// replica would need over 64 GB before that.
    pub fn intern(&mut self, text: &str) -> Sym {
        // Hashed once, for the look-up and the insertion both.
        let hash = self.hasher.hash_one(text);
        let found = self
            .table
            .find(hash, |s| &*self.slots[s.slot()].text == text)
            .copied();
        if let Some(sym) = found {
            self.retain(sym);
            return sym;
        }
        let slot = Slot {
            text: text.into(),
            refs: 1,
        };
        let sym = match self.free.pop() {
            Some(sym) => {
                self.slots[sym.slot()] = slot;
                sym
            }
            None => {
                let sym = Sym::of_slot(self.slots.len()).expect("interned string count");
                self.slots.push(slot);
                sym
            }
        };
        let Self {
            slots,
            table,
            hasher,
            ..
        } = self;
        table.insert_unique(hash, sym, |s| hasher.hash_one(&*slots[s.slot()].text));
        sym
    }

    /// Take one more reference to an interned symbol. A string referenced `u32::MAX`
    /// times stays for good rather than overflow its count.
    pub fn retain(&mut self, sym: Sym) {
        let slot = &mut self.slots[sym.slot()];
        debug_assert!(slot.refs > 0, "retain of a freed symbol");
        slot.refs = slot.refs.saturating_add(1);
    }

    /// Drop one reference; the string is freed with its last reference.
    pub fn release(&mut self, sym: Sym) {
        let slot = &mut self.slots[sym.slot()];
        debug_assert!(slot.refs > 0, "release of a freed symbol");
        if slot.refs == u32::MAX {
            return; // saturated: kept for good
        }
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs > 0 {
            return;
        }
        let text = std::mem::take(&mut slot.text);
        let hash = self.hasher.hash_one(&*text);
        if let Ok(entry) = self.table.find_entry(hash, |s| *s == sym) {
            entry.remove();
        }
        self.free.push(sym);
    }

    /// The text of a symbol.
    pub fn resolve(&self, sym: Sym) -> &str {
        &self.slots[sym.slot()].text
    }

    /// Number of distinct strings held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// References held to `sym` (0 once freed).
    #[cfg(test)]
    pub fn refs(&self, sym: Sym) -> u32 {
        self.slots[sym.slot()].refs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_distinct_string_freed_with_its_last_reference() {
        let mut names = Interner::default();
        let a = names.intern("NE-1/2");
        let b = names.intern("NE-1");
        assert_eq!(names.intern("NE-1/2"), a);
        assert_ne!(a, b);
        assert_eq!((names.len(), names.refs(a)), (2, 2));
        assert_eq!(names.resolve(a), "NE-1/2");
        assert_eq!(names.get("NE-1"), Some(b));
        assert_eq!(names.get("NE-9"), None);

        names.release(a);
        assert_eq!(names.get("NE-1/2"), Some(a));
        names.release(a);
        assert_eq!((names.get("NE-1/2"), names.len()), (None, 1));
        // The freed slot is reused, and the new string is found by its own text.
        let c = names.intern("CPE-7");
        assert_eq!(c, a);
        assert_eq!(names.resolve(c), "CPE-7");
        assert_eq!(names.get("CPE-7"), Some(c));
        names.retain(b);
        names.release(b);
        assert_eq!(names.resolve(b), "NE-1");
    }

    #[test]
    fn the_empty_string_is_a_string_like_any_other() {
        let mut names = Interner::default();
        let e = names.intern("");
        assert_eq!(names.get(""), Some(e));
        names.release(e);
        assert_eq!(names.get(""), None);
    }
}
