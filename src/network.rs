//! The inventory replica as the engine uses it: circuits by id, and for every network
//! object the circuits (and which of their routes) that an alarm on it would hit.
//!
//! Both stages read it: the fan-out to turn an alarm into impacts, the circuit state to
//! know a circuit's levels and routes. Iteration orders are deterministic (sorted) so
//! that the same input always gives the same output.

use std::collections::{BTreeMap, HashMap};

use crate::inventory::{Circuit, InventoryChange};

/// Where an alarmed object sits on one circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Indexes into `Circuit::routes` of the routes that use the object.
    pub routes: Vec<usize>,
    /// Domain of the path element that uses the object (e.g. "transmission").
    pub domain: Option<String>,
    /// Equipment type of that element (e.g. "OTN").
    pub ne_type: Option<String>,
}

/// Circuits and the object → circuit index.
#[derive(Debug, Default, Clone)]
pub struct Network {
    circuits: HashMap<String, Circuit>,
    /// object id → circuit id → usage. Inner map sorted for deterministic fan-out.
    by_object: HashMap<String, BTreeMap<String, Usage>>,
}

impl Network {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn circuit(&self, circuit_id: &str) -> Option<&Circuit> {
        self.circuits.get(circuit_id)
    }

    pub fn len(&self) -> usize {
        self.circuits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.circuits.is_empty()
    }

    /// Circuits hit by an alarm on `object`, with the routes hit, in circuit-id order.
    pub fn circuits_on(&self, object: &str) -> impl Iterator<Item = (&str, &Usage)> {
        self.by_object
            .get(object)
            .into_iter()
            .flat_map(|m| m.iter().map(|(c, u)| (c.as_str(), u)))
    }

    /// Apply one inventory record. Returns the circuit as it was before, if any.
    pub fn apply(&mut self, change: InventoryChange) -> Option<Circuit> {
        match change {
            InventoryChange::Upsert(circuit) => {
                let old = self.remove(&circuit.circuit_id);
                self.insert(*circuit);
                old
            }
            InventoryChange::Delete { circuit_id } => self.remove(&circuit_id),
        }
    }

    fn insert(&mut self, circuit: Circuit) {
        for (route_idx, route) in circuit.routes.iter().enumerate() {
            for element in &route.path {
                for object in element.impacting_objects() {
                    let usage = self
                        .by_object
                        .entry(object)
                        .or_default()
                        .entry(circuit.circuit_id.clone())
                        .or_insert_with(|| Usage {
                            routes: Vec::new(),
                            domain: element.domain.clone(),
                            ne_type: element.ne_type.clone(),
                        });
                    if !usage.routes.contains(&route_idx) {
                        usage.routes.push(route_idx);
                    }
                }
            }
        }
        self.circuits.insert(circuit.circuit_id.clone(), circuit);
    }

    fn remove(&mut self, circuit_id: &str) -> Option<Circuit> {
        let old = self.circuits.remove(circuit_id)?;
        for route in &old.routes {
            for element in &route.path {
                for object in element.impacting_objects() {
                    if let Some(m) = self.by_object.get_mut(&object) {
                        m.remove(circuit_id);
                        if m.is_empty() {
                            self.by_object.remove(&object);
                        }
                    }
                }
            }
        }
        Some(old)
    }

    /// Routes of `circuit` that use `object` (or an object below it), if any.
    pub fn routes_using(&self, circuit_id: &str, object: &str) -> Option<&Usage> {
        self.by_object.get(object).and_then(|m| m.get(circuit_id))
    }
}
