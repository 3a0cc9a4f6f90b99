//! The inventory replica as the engine uses it: circuits by id, and for every network
//! object the circuits (and which of their routes) that an alarm on it would hit.
//!
//! Both stages read it: the fan-out to turn an alarm into impacts, the circuit state to
//! know a circuit's levels and routes. Iteration orders are deterministic (sorted) so
//! that the same input always gives the same output.
//!
//! Every instance holds the whole replica, so it is kept compact (BENCHMARKS.md, issue 12):
//! - every identifier is interned once and named everywhere by a 4-byte symbol;
//! - domains and equipment types are small enums, with the interned text for the rare
//!   value outside the known ones;
//! - the object → circuits index holds only circuit symbols, sorted by circuit id: which
//!   routes an object is on, and the domain of the element it is on, are read from the
//!   circuit's own routes when asked (a scan of its few path elements, comparing symbols);
//! - an object used by one circuit (a CPE, an access port) holds that circuit inline.

mod intern;

use hashbrown::HashMap;
use std::fmt;

use intern::{Interner, Sym};

use crate::inventory::{
    Circuit, Customer, InventoryChange, ObjectKind, PathElement, Route, RouteRole, ServiceKind,
};
use crate::levels::{AssuranceLevel, CustomerLevel, Scope};

/// Where an alarmed object sits on one circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage<'a> {
    /// Indexes into the circuit's routes of the routes that use the object.
    pub routes: Vec<usize>,
    /// Domain of the path element that uses the object (e.g. "transmission").
    pub domain: Option<&'a str>,
    /// Equipment type of that element (e.g. "OTN").
    pub ne_type: Option<&'a str>,
}

/// Circuits and the object → circuit index.
#[derive(Debug, Default, Clone)]
pub struct Network {
    names: Interner,
    /// Circuit id → circuit.
    circuits: HashMap<Sym, CircuitRecord>,
    /// Object id → the circuits whose routes use it or an object below it.
    by_object: HashMap<Sym, Users>,
}

/// A circuit as the replica holds it: [`Circuit`] with symbols for its strings.
#[derive(Debug, Clone)]
struct CircuitRecord {
    customer_id: Sym,
    customer_name: Sym,
    customer_level: CustomerLevel,
    assurance_level: AssuranceLevel,
    scope: Scope,
    service: ServiceKind,
    routes: Box<[RouteRecord]>,
}

#[derive(Debug, Clone)]
struct RouteRecord {
    role: RouteRole,
    path: Box<[Hop]>,
}

/// One path element.
#[derive(Debug, Clone, Copy)]
struct Hop {
    id: Sym,
    /// For a port, the card above it (named, or read from the `/` naming); for other
    /// kinds the `card` the record named, which hits nothing.
    card: Option<Sym>,
    /// For a card or a port, the NE above it (named, or read from the naming); for an NE
    /// or a link the `ne` the record named, which hits nothing.
    ne: Option<Sym>,
    domain: Option<Domain>,
    ne_type: Option<NeType>,
    kind: ObjectKind,
    /// Which of `ne` ([`GIVEN_NE`]) and `card` ([`GIVEN_CARD`]) the record named.
    given: u8,
}

const GIVEN_NE: u8 = 1;
const GIVEN_CARD: u8 = 2;

impl Hop {
    /// The objects whose alarms hit this element: itself, and for a card or a port the
    /// objects above it.
    fn hit_by(&self) -> impl Iterator<Item = Sym> {
        let (card, ne) = match self.kind {
            ObjectKind::Ne | ObjectKind::Link => (None, None),
            ObjectKind::Card => (None, self.ne),
            ObjectKind::Port => (self.card, self.ne),
        };
        [Some(self.id), card, ne].into_iter().flatten()
    }

    fn is_hit_by(&self, object: Sym) -> bool {
        self.hit_by().any(|o| o == object)
    }

    /// Every symbol the hop holds a reference to.
    fn symbols(&self) -> impl Iterator<Item = Sym> {
        [
            Some(self.id),
            self.card,
            self.ne,
            self.domain.and_then(Domain::other),
            self.ne_type.and_then(NeType::other),
        ]
        .into_iter()
        .flatten()
    }
}

/// Network domain of a path element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Transmission,
    Data,
    Access,
    Cpe,
    Other(Sym),
}

impl Domain {
    const KNOWN: [(&'static str, Domain); 4] = [
        ("transmission", Domain::Transmission),
        ("data", Domain::Data),
        ("access", Domain::Access),
        ("cpe", Domain::Cpe),
    ];

    fn other(self) -> Option<Sym> {
        match self {
            Domain::Other(s) => Some(s),
            _ => None,
        }
    }
}

/// Equipment type of a path element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NeType {
    Sdh,
    Mstp,
    Ptn,
    Otn,
    Wdm,
    Router,
    Switch,
    Cpe,
    Other(Sym),
}

impl NeType {
    const KNOWN: [(&'static str, NeType); 8] = [
        ("SDH", NeType::Sdh),
        ("MSTP", NeType::Mstp),
        ("PTN", NeType::Ptn),
        ("OTN", NeType::Otn),
        ("WDM", NeType::Wdm),
        ("router", NeType::Router),
        ("switch", NeType::Switch),
        ("CPE", NeType::Cpe),
    ];

    fn other(self) -> Option<Sym> {
        match self {
            NeType::Other(s) => Some(s),
            _ => None,
        }
    }
}

/// A small enum of known names, with the interned text for any other.
trait Label: Copy + PartialEq + 'static {
    const TABLE: &'static [(&'static str, Self)];
    fn wrap(sym: Sym) -> Self;
    fn unwrap_other(self) -> Option<Sym>;

    /// Known names are matched exactly (letter case included), so that the text given back
    /// is the text read.
    fn read(text: &str, names: &mut Interner) -> Self {
        Self::TABLE
            .iter()
            .find(|(name, _)| *name == text)
            .map_or_else(|| Self::wrap(names.intern(text)), |(_, v)| *v)
    }

    fn text(self, names: &Interner) -> &str {
        match self.unwrap_other() {
            Some(sym) => names.resolve(sym),
            None => Self::TABLE
                .iter()
                .find(|(_, v)| *v == self)
                .map_or("", |(name, _)| name),
        }
    }
}

impl Label for Domain {
    const TABLE: &'static [(&'static str, Self)] = &Domain::KNOWN;
    fn wrap(sym: Sym) -> Self {
        Domain::Other(sym)
    }
    fn unwrap_other(self) -> Option<Sym> {
        self.other()
    }
}

impl Label for NeType {
    const TABLE: &'static [(&'static str, Self)] = &NeType::KNOWN;
    fn wrap(sym: Sym) -> Self {
        NeType::Other(sym)
    }
    fn unwrap_other(self) -> Option<Sym> {
        self.other()
    }
}

/// Entries of an index list are split in chunks of at most this many, so that adding a
/// circuit to an object used by a million moves a few kilobytes, not megabytes.
const CHUNK: usize = 1024;

/// The circuits on one object, sorted by circuit id. Most objects are used by a single
/// circuit, held inline without an allocation.
#[derive(Debug, Clone)]
enum Users {
    One(Sym),
    /// Sorted chunks, none empty, together holding at least two circuits.
    Many(Vec<Vec<Sym>>),
}

impl Users {
    fn iter(&self) -> impl Iterator<Item = Sym> + '_ {
        let (one, many) = match self {
            Users::One(c) => (Some(*c), &[][..]),
            Users::Many(chunks) => (None, &chunks[..]),
        };
        one.into_iter().chain(many.iter().flatten().copied())
    }

    /// Index of the chunk where `key` is or belongs: the first whose last entry is not
    /// below it, or the last chunk.
    fn chunk_of(chunks: &[Vec<Sym>], key: &str, names: &Interner) -> usize {
        chunks
            .partition_point(|ch| ch.last().is_some_and(|l| names.resolve(*l) < key))
            .min(chunks.len().saturating_sub(1))
    }

    fn insert(&mut self, circuit: Sym, names: &Interner) {
        let key = names.resolve(circuit);
        match self {
            Users::One(c) if *c == circuit => {}
            Users::One(c) => {
                let pair = if names.resolve(*c) < key {
                    vec![*c, circuit]
                } else {
                    vec![circuit, *c]
                };
                *self = Users::Many(vec![pair]);
            }
            Users::Many(chunks) => {
                // An inventory is mostly read in circuit-id order: try the end first.
                let last = chunks.len().saturating_sub(1);
                if let Some(tail) = chunks
                    .get_mut(last)
                    .filter(|ch| ch.last().is_some_and(|l| names.resolve(*l) < key))
                {
                    if tail.len() < CHUNK {
                        tail.push(circuit);
                    } else {
                        chunks.push(vec![circuit]);
                    }
                    return;
                }
                let i = Self::chunk_of(chunks, key, names);
                let Some(chunk) = chunks.get_mut(i) else {
                    chunks.push(vec![circuit]);
                    return;
                };
                match chunk.binary_search_by(|c| names.resolve(*c).cmp(key)) {
                    Ok(_) => return,
                    Err(at) => chunk.insert(at, circuit),
                }
                if chunk.len() > CHUNK {
                    let tail = chunk.split_off(CHUNK / 2);
                    chunk.shrink_to_fit();
                    chunks.insert(i + 1, tail);
                }
            }
        }
    }

    /// Remove a circuit; returns whether no circuit is left.
    fn remove(&mut self, circuit: Sym, names: &Interner) -> bool {
        let chunks = match self {
            Users::One(c) => return *c == circuit,
            Users::Many(chunks) => chunks,
        };
        let key = names.resolve(circuit);
        let i = Self::chunk_of(chunks, key, names);
        if let Some(chunk) = chunks.get_mut(i) {
            if let Ok(at) = chunk.binary_search_by(|c| names.resolve(*c).cmp(key)) {
                chunk.remove(at);
                if chunk.is_empty() {
                    chunks.remove(i);
                }
            }
        }
        match chunks.as_slice() {
            [] => true,
            [only] if only.len() == 1 => {
                *self = Users::One(only[0]);
                false
            }
            _ => false,
        }
    }
}

/// A circuit of the replica, read in place. Its fields mirror [`Circuit`]'s.
#[derive(Clone, Copy)]
pub struct CircuitRef<'a> {
    pub circuit_id: &'a str,
    pub customer: CustomerRef<'a>,
    pub assurance_level: AssuranceLevel,
    pub scope: Scope,
    pub service: ServiceKind,
    pub routes: Routes<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub level: CustomerLevel,
}

/// The routes of a [`CircuitRef`].
#[derive(Clone, Copy)]
pub struct Routes<'a> {
    routes: &'a [RouteRecord],
    names: &'a Interner,
}

impl<'a> Routes<'a> {
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, as the inventory record gave them.
    pub fn to_vec(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|r| Route {
                role: r.role,
                path: r.path.iter().map(|h| self.element(h)).collect(),
            })
            .collect()
    }

    fn element(&self, hop: &Hop) -> PathElement {
        let names = self.names;
        let named = |sym: Option<Sym>, flag: u8| {
            sym.filter(|_| hop.given & flag != 0)
                .map(|s| names.resolve(s).to_string())
        };
        PathElement {
            kind: hop.kind,
            id: names.resolve(hop.id).to_string(),
            domain: hop.domain.map(|d| d.text(names).to_string()),
            ne_type: hop.ne_type.map(|t| t.text(names).to_string()),
            ne: named(hop.ne, GIVEN_NE),
            card: named(hop.card, GIVEN_CARD),
        }
    }

    /// Every object whose alarm hits the circuit (each path element and the objects above
    /// it), in route and path order; an object may come more than once.
    pub fn impacting_objects(&self) -> impl Iterator<Item = &'a str> + 'a {
        let names = self.names;
        self.routes
            .iter()
            .flat_map(|r| r.path.iter())
            .flat_map(Hop::hit_by)
            .map(move |s| names.resolve(s))
    }
}

impl fmt::Debug for Routes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_vec()).finish()
    }
}

impl fmt::Debug for CircuitRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_circuit().fmt(f)
    }
}

impl CircuitRef<'_> {
    /// Is the circuit protected (more than one route)?
    pub fn is_protected(&self) -> bool {
        self.routes.len() > 1
    }

    /// The circuit as the inventory record gave it.
    pub fn to_circuit(&self) -> Circuit {
        Circuit {
            circuit_id: self.circuit_id.to_string(),
            customer: Customer {
                id: self.customer.id.to_string(),
                name: self.customer.name.to_string(),
                level: self.customer.level,
            },
            assurance_level: self.assurance_level,
            scope: self.scope,
            service: self.service,
            routes: self.routes.to_vec(),
        }
    }
}

impl Network {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn circuit(&self, circuit_id: &str) -> Option<CircuitRef<'_>> {
        let id = self.names.get(circuit_id)?;
        let record = self.circuits.get(&id)?;
        Some(self.view(id, record))
    }

    fn view<'a>(&'a self, id: Sym, r: &'a CircuitRecord) -> CircuitRef<'a> {
        CircuitRef {
            circuit_id: self.names.resolve(id),
            customer: CustomerRef {
                id: self.names.resolve(r.customer_id),
                name: self.names.resolve(r.customer_name),
                level: r.customer_level,
            },
            assurance_level: r.assurance_level,
            scope: r.scope,
            service: r.service,
            routes: Routes {
                routes: &r.routes,
                names: &self.names,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.circuits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.circuits.is_empty()
    }

    /// The ids of every circuit, in no particular order.
    pub fn circuit_ids(&self) -> impl Iterator<Item = &str> {
        self.circuits.keys().map(|id| self.names.resolve(*id))
    }

    /// Circuits hit by an alarm on `object`, with the routes hit, in circuit-id order.
    pub fn circuits_on(&self, object: &str) -> impl Iterator<Item = (&str, Usage<'_>)> {
        let object = self.names.get(object);
        object
            .and_then(|o| Some((o, self.by_object.get(&o)?)))
            .into_iter()
            .flat_map(move |(o, users)| {
                users.iter().filter_map(move |c| {
                    let usage = self.usage(self.circuits.get(&c)?, o)?;
                    Some((self.names.resolve(c), usage))
                })
            })
    }

    /// Routes of `circuit` that use `object` (or an object below it), if any.
    pub fn routes_using(&self, circuit_id: &str, object: &str) -> Option<Usage<'_>> {
        let record = self.circuits.get(&self.names.get(circuit_id)?)?;
        self.usage(record, self.names.get(object)?)
    }

    /// Where `object` sits on a circuit: the routes with an element it hits, and the
    /// domain and type of the first such element (in route, then path order).
    fn usage<'a>(&'a self, record: &'a CircuitRecord, object: Sym) -> Option<Usage<'a>> {
        let mut routes = Vec::new();
        let mut first: Option<&Hop> = None;
        for (i, route) in record.routes.iter().enumerate() {
            if let Some(hop) = route.path.iter().find(|h| h.is_hit_by(object)) {
                first.get_or_insert(hop);
                routes.push(i);
            }
        }
        let hop = first?;
        Some(Usage {
            routes,
            domain: hop.domain.map(|d| d.text(&self.names)),
            ne_type: hop.ne_type.map(|t| t.text(&self.names)),
        })
    }

    /// Apply one inventory record. Returns the circuit as it was before, if any.
    pub fn apply(&mut self, change: InventoryChange) -> Option<Circuit> {
        match change {
            InventoryChange::Upsert(circuit) => {
                // The new record takes its references first, so that the strings it shares
                // with the old one stay where they are.
                let id = self.names.intern(&circuit.circuit_id);
                let record = self.record(&circuit);
                let old = self.remove(id);
                self.index(id, record);
                old
            }
            InventoryChange::Delete { circuit_id } => {
                let id = self.names.get(&circuit_id)?;
                self.remove(id)
            }
        }
    }

    /// Intern a circuit's strings (one reference each).
    fn record(&mut self, c: &Circuit) -> CircuitRecord {
        let names = &mut self.names;
        let routes = c
            .routes
            .iter()
            .map(|r| RouteRecord {
                role: r.role,
                path: r.path.iter().map(|e| hop(e, names)).collect(),
            })
            .collect();
        CircuitRecord {
            customer_id: names.intern(&c.customer.id),
            customer_name: names.intern(&c.customer.name),
            customer_level: c.customer.level,
            assurance_level: c.assurance_level,
            scope: c.scope,
            service: c.service,
            routes,
        }
    }

    /// Add a circuit under `id` (whose reference it takes over) to the index.
    fn index(&mut self, id: Sym, record: CircuitRecord) {
        for object in objects_of(&record) {
            match self.by_object.get_mut(&object) {
                Some(users) => users.insert(id, &self.names),
                None => {
                    self.names.retain(object);
                    self.by_object.insert(object, Users::One(id));
                }
            }
        }
        self.circuits.insert(id, record);
    }

    /// Remove a circuit; returns it as the inventory record gave it.
    fn remove(&mut self, id: Sym) -> Option<Circuit> {
        let record = self.circuits.remove(&id)?;
        let old = self.view(id, &record).to_circuit();
        for object in objects_of(&record) {
            let emptied = self
                .by_object
                .get_mut(&object)
                .is_some_and(|users| users.remove(id, &self.names));
            if emptied {
                self.by_object.remove(&object);
                self.names.release(object);
            }
        }
        let hops = record.routes.iter().flat_map(|r| r.path.iter());
        for sym in [id, record.customer_id, record.customer_name]
            .into_iter()
            .chain(hops.flat_map(Hop::symbols))
        {
            self.names.release(sym);
        }
        Some(old)
    }
}

/// Every object whose alarm hits the circuit, each once.
fn objects_of(record: &CircuitRecord) -> Vec<Sym> {
    let mut objects: Vec<Sym> = record
        .routes
        .iter()
        .flat_map(|r| r.path.iter())
        .flat_map(Hop::hit_by)
        .collect();
    objects.sort_unstable();
    objects.dedup();
    objects
}

fn hop(e: &PathElement, names: &mut Interner) -> Hop {
    let (card, ne) = match (e.kind, e.parents()) {
        (ObjectKind::Port, (card, ne)) => (card, ne),
        (ObjectKind::Card, (_, ne)) => (e.card.as_deref(), ne),
        _ => (e.card.as_deref(), e.ne.as_deref()),
    };
    let given = (u8::from(e.ne.is_some()) * GIVEN_NE) | (u8::from(e.card.is_some()) * GIVEN_CARD);
    Hop {
        id: names.intern(&e.id),
        card: card.map(|c| names.intern(c)),
        ne: ne.map(|n| names.intern(n)),
        domain: e.domain.as_deref().map(|d| Domain::read(d, names)),
        ne_type: e.ne_type.as_deref().map(|t| NeType::read(t, names)),
        kind: e.kind,
        given,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// The replica as it was before it was made compact: every index entry owns its
    /// strings. The compact one must answer exactly as it does.
    #[derive(Default)]
    struct Naive {
        circuits: HashMap<String, Circuit>,
        by_object: HashMap<String, BTreeMap<String, NaiveUsage>>,
    }

    type NaiveUsage = (Vec<usize>, Option<String>, Option<String>);

    impl Naive {
        fn apply(&mut self, change: InventoryChange) -> Option<Circuit> {
            match change {
                InventoryChange::Upsert(circuit) => {
                    let old = self.remove(&circuit.circuit_id);
                    for (route_idx, route) in circuit.routes.iter().enumerate() {
                        for element in &route.path {
                            for object in element.impacting_objects() {
                                let usage = self
                                    .by_object
                                    .entry(object)
                                    .or_default()
                                    .entry(circuit.circuit_id.clone())
                                    .or_insert_with(|| {
                                        (
                                            Vec::new(),
                                            element.domain.clone(),
                                            element.ne_type.clone(),
                                        )
                                    });
                                if !usage.0.contains(&route_idx) {
                                    usage.0.push(route_idx);
                                }
                            }
                        }
                    }
                    self.circuits.insert(circuit.circuit_id.clone(), *circuit);
                    old
                }
                InventoryChange::Delete { circuit_id } => self.remove(&circuit_id),
            }
        }

        fn remove(&mut self, circuit_id: &str) -> Option<Circuit> {
            let old = self.circuits.remove(circuit_id)?;
            for element in old.routes.iter().flat_map(|r| r.path.iter()) {
                for object in element.impacting_objects() {
                    if let Some(m) = self.by_object.get_mut(&object) {
                        m.remove(circuit_id);
                        if m.is_empty() {
                            self.by_object.remove(&object);
                        }
                    }
                }
            }
            Some(old)
        }
    }

    fn owned(usage: Usage<'_>) -> NaiveUsage {
        (
            usage.routes,
            usage.domain.map(str::to_string),
            usage.ne_type.map(str::to_string),
        )
    }

    /// Everything the two replicas answer, for the objects and circuit ids given.
    fn assert_same(net: &Network, naive: &Naive, objects: &BTreeSet<String>, ids: &[String]) {
        assert_eq!(net.len(), naive.circuits.len());
        for object in objects {
            let got: Vec<(String, NaiveUsage)> = net
                .circuits_on(object)
                .map(|(c, u)| (c.to_string(), owned(u)))
                .collect();
            let want: Vec<(String, NaiveUsage)> = naive
                .by_object
                .get(object)
                .map(|m| m.iter().map(|(c, u)| (c.clone(), u.clone())).collect())
                .unwrap_or_default();
            assert_eq!(got, want, "circuits on {object}");
            for id in ids {
                let want = naive.by_object.get(object).and_then(|m| m.get(id)).cloned();
                assert_eq!(
                    net.routes_using(id, object).map(owned),
                    want,
                    "{id} on {object}"
                );
            }
        }
        for id in ids {
            let got = net.circuit(id).map(|c| c.to_circuit());
            assert_eq!(got.as_ref(), naive.circuits.get(id), "circuit {id}");
            if let (Some(c), Some(want)) = (net.circuit(id), naive.circuits.get(id)) {
                let mut objects: Vec<&str> = c.routes.impacting_objects().collect();
                objects.sort_unstable();
                objects.dedup();
                let mut expected: Vec<String> = want
                    .routes
                    .iter()
                    .flat_map(|r| r.path.iter())
                    .flat_map(PathElement::impacting_objects)
                    .collect();
                expected.sort_unstable();
                expected.dedup();
                assert_eq!(objects, expected, "objects of {id}");
            }
        }
    }

    // A small world, so that circuits share objects, parents and names: NEs N0-N2 with
    // cards N0/0-N0/1 and ports N0/0/0-..., links, explicit parents that follow the naming
    // or not, and a circuit id that is also an object id.
    fn object() -> impl Strategy<Value = PathElement> {
        let kind = prop::sample::select(vec![
            ObjectKind::Ne,
            ObjectKind::Card,
            ObjectKind::Port,
            ObjectKind::Link,
        ]);
        let name = |v: &[&'static str]| prop::option::of(prop::sample::select(v.to_vec()));
        (
            kind,
            0..3usize,
            0..2usize,
            0..2usize,
            name(&["transmission", "data", "cpe", "Transmission", "microwave"]),
            name(&["PTN", "OTN", "router", "ptn", "DSLAM"]),
            name(&["N0", "N1", "NE-X", ""]),
            name(&["N0/1", "CARD-Y"]),
        )
            .prop_map(
                |(kind, ne, card, port, domain, ne_type, ne_given, card_given)| {
                    let id = match kind {
                        ObjectKind::Ne => format!("N{ne}"),
                        ObjectKind::Card => format!("N{ne}/{card}"),
                        ObjectKind::Port => format!("N{ne}/{card}/{port}"),
                        ObjectKind::Link => format!("L{ne}{card}"),
                    };
                    PathElement {
                        kind,
                        id,
                        domain: domain.map(str::to_string),
                        ne_type: ne_type.map(str::to_string),
                        ne: ne_given.map(str::to_string),
                        card: card_given.map(str::to_string),
                    }
                },
            )
    }

    const IDS: &[&str] = &["C0", "C1", "C2", "C3", "C4", "C5", "N1", "L00"];

    fn circuit() -> impl Strategy<Value = Circuit> {
        let route = (any::<bool>(), prop::collection::vec(object(), 1..5)).prop_map(
            |(working, mut path)| {
                // An object appears once per route, as the parser insists.
                let mut seen = BTreeSet::new();
                path.retain(|e| seen.insert(e.id.clone()));
                Route {
                    role: if working {
                        RouteRole::Working
                    } else {
                        RouteRole::Protection
                    },
                    path,
                }
            },
        );
        (
            prop::sample::select(IDS.to_vec()),
            prop::sample::select(vec!["CU-1", "CU-2", "C0"]),
            prop::collection::vec(route, 1..4),
        )
            .prop_map(|(id, customer, routes)| Circuit {
                circuit_id: id.to_string(),
                customer: Customer {
                    id: customer.to_string(),
                    name: format!("Customer {customer}"),
                    level: CustomerLevel::Gold,
                },
                assurance_level: AssuranceLevel::Aa,
                scope: Scope::IntraCity,
                service: ServiceKind::Data,
                routes,
            })
    }

    fn change() -> impl Strategy<Value = InventoryChange> {
        prop_oneof![
            3 => circuit().prop_map(|c| InventoryChange::Upsert(Box::new(c))),
            1 => prop::sample::select(IDS.to_vec()).prop_map(|id| InventoryChange::Delete {
                circuit_id: id.to_string()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn answers_as_a_naive_map_through_upserts_and_deletes(
            changes in prop::collection::vec(change(), 1..40),
        ) {
            let mut net = Network::new();
            let mut naive = Naive::default();
            let ids: Vec<String> = IDS.iter().map(|s| s.to_string()).collect();
            let mut objects: BTreeSet<String> = ["N0", "N0/1", "NE-X", "", "CARD-Y", "C0"]
                .into_iter()
                .map(str::to_string)
                .collect();
            for change in changes {
                if let InventoryChange::Upsert(c) = &change {
                    objects.extend(c.routes.iter().flat_map(|r| r.path.iter()).flat_map(PathElement::impacting_objects));
                }
                let want = naive.apply(change.clone());
                prop_assert_eq!(net.apply(change), want);
                assert_same(&net, &naive, &objects, &ids);
            }
            // Deleting everything leaves nothing behind: no index entry, no string.
            for id in &ids {
                net.apply(InventoryChange::Delete { circuit_id: id.clone() });
            }
            prop_assert!(net.is_empty());
            prop_assert!(net.by_object.is_empty());
            prop_assert_eq!(net.names.len(), 0);
        }
    }

    fn on_shared(id: &str) -> InventoryChange {
        let el = |kind, id: &str| PathElement {
            kind,
            id: id.to_string(),
            domain: Some("transmission".into()),
            ne_type: Some("OTN".into()),
            ne: None,
            card: None,
        };
        InventoryChange::Upsert(Box::new(Circuit {
            circuit_id: id.to_string(),
            customer: Customer {
                id: "CU".into(),
                name: "Customer".into(),
                level: CustomerLevel::Standard,
            },
            assurance_level: AssuranceLevel::Ordinary,
            scope: Scope::InterProvince,
            service: ServiceKind::Internet,
            routes: vec![Route {
                role: RouteRole::Working,
                path: vec![
                    el(ObjectKind::Ne, &format!("CPE-{id}")),
                    el(ObjectKind::Link, "CORE"),
                ],
            }],
        }))
    }

    #[test]
    fn an_object_under_thousands_of_circuits_stays_sorted_in_chunks() {
        // Read in a scrambled order, and in circuit-id order.
        for step in [7919, 1] {
            under_thousands(step);
        }
    }

    fn under_thousands(step: usize) {
        let n = 5 * CHUNK + 7;
        let ids: Vec<String> = (0..n).map(|i| format!("DL-{:06}", i * step % n)).collect();
        let mut net = Network::new();
        for id in &ids {
            net.apply(on_shared(id));
        }
        let Some(Users::Many(chunks)) = net.names.get("CORE").and_then(|o| net.by_object.get(&o))
        else {
            panic!("no list for CORE")
        };
        assert!(chunks.len() > 1 && chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        let mut sorted = ids.clone();
        sorted.sort();
        let got: Vec<&str> = net.circuits_on("CORE").map(|(c, _)| c).collect();
        assert_eq!(got, sorted);
        // A single-circuit object has its circuit inline.
        let cpe = net
            .names
            .get("CPE-DL-000003")
            .and_then(|o| net.by_object.get(&o));
        assert!(matches!(cpe, Some(Users::One(_))));

        // Remove every other circuit, in another order; the rest stays in order.
        for id in ids.iter().rev().step_by(2) {
            assert!(net
                .apply(InventoryChange::Delete {
                    circuit_id: id.clone()
                })
                .is_some());
        }
        let mut left: Vec<String> = ids.iter().rev().skip(1).step_by(2).cloned().collect();
        left.sort();
        let got: Vec<&str> = net.circuits_on("CORE").map(|(c, _)| c).collect();
        assert_eq!(got, left);
        for id in &left[1..] {
            net.apply(InventoryChange::Delete {
                circuit_id: id.clone(),
            });
        }
        let only = net.names.get("CORE").and_then(|o| net.by_object.get(&o));
        assert!(matches!(only, Some(Users::One(_))), "{only:?}");
        assert_eq!(
            net.circuits_on("CORE").map(|(c, _)| c).collect::<Vec<_>>(),
            vec![left[0].as_str()]
        );
    }

    #[test]
    fn a_reroute_keeps_shared_strings_and_frees_the_rest() {
        let mut net = Network::new();
        net.apply(on_shared("A"));
        net.apply(on_shared("B"));
        let before = net.names.len();
        // A moves off CORE to another link: CORE stays (B), A's old CPE string is reused.
        let Some(InventoryChange::Upsert(mut a)) = Some(on_shared("A")) else {
            unreachable!()
        };
        a.routes[0].path[1].id = "METRO".into();
        let old = net.apply(InventoryChange::Upsert(a));
        assert_eq!(
            old.map(|c| c.routes[0].path[1].id.clone()).as_deref(),
            Some("CORE")
        );
        assert_eq!(net.circuits_on("CORE").count(), 1);
        assert_eq!(
            net.circuits_on("METRO").map(|(c, _)| c).collect::<Vec<_>>(),
            ["A"]
        );
        assert_eq!(net.names.len(), before + 1);
        let sym = net.names.get("CPE-A").expect("interned");
        // The id, the index key.
        assert_eq!(net.names.refs(sym), 2);
        let domain = net.routes_using("A", "METRO").and_then(|u| u.domain);
        assert_eq!(domain, Some("transmission"));
    }

    #[test]
    fn the_compact_parts_stay_small() {
        assert_eq!(std::mem::size_of::<Option<Sym>>(), 4);
        assert_eq!(std::mem::size_of::<Option<Domain>>(), 8);
        assert!(std::mem::size_of::<Hop>() <= 32);
        assert!(std::mem::size_of::<Users>() <= 24);
        assert!(std::mem::size_of::<CircuitRecord>() <= 32);
    }
}
