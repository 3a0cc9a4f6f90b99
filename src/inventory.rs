//! The circuit inventory: customer circuits and the network objects their paths use.
//!
//! Object naming: a path element is an NE, a card, a port or a link. Cards and ports name
//! their parents with `/`: card "NE1/3" sits in NE "NE1", port "NE1/3/2" on that card. A
//! path element may also name its `ne` and `card` explicitly, which wins over the naming
//! convention. An alarm on an object hits every circuit whose path uses that object or an
//! object below it (see [`PathElement::impacting_objects`]).

use serde::{Deserialize, Serialize};

use crate::levels::{AssuranceLevel, CustomerLevel, Scope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Ne,
    Card,
    Port,
    Link,
}

/// One hop of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathElement {
    pub kind: ObjectKind,
    pub id: String,
    /// Network domain of the object: "transmission" (SDH/MSTP, PTN, OTN, fibre),
    /// "data" (routers, switches), "access", "cpe".
    #[serde(default)]
    pub domain: Option<String>,
    /// Equipment type, e.g. "PTN", "OTN", "router", "CPE".
    #[serde(default)]
    pub ne_type: Option<String>,
    /// The NE holding a card or port, when it does not follow the `/` naming convention.
    #[serde(default)]
    pub ne: Option<String>,
    /// The card holding a port, when it does not follow the `/` naming convention.
    #[serde(default)]
    pub card: Option<String>,
}

impl PathElement {
    /// Every object id whose alarm impacts this element: itself and its ancestors
    /// (a port's card and NE, a card's NE).
    pub fn impacting_objects(&self) -> Vec<String> {
        let mut out = vec![self.id.clone()];
        match self.kind {
            ObjectKind::Ne | ObjectKind::Link => {}
            ObjectKind::Card => {
                let ne = self.ne.clone().or_else(|| parent_of(&self.id));
                out.extend(ne);
            }
            ObjectKind::Port => {
                let card = self.card.clone().or_else(|| parent_of(&self.id));
                let ne = self
                    .ne
                    .clone()
                    .or_else(|| card.as_deref().and_then(parent_of));
                out.extend(card);
                out.extend(ne);
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn parent_of(id: &str) -> Option<String> {
    id.rsplit_once('/')
        .map(|(parent, _)| parent.to_string())
        .filter(|p| !p.is_empty())
}

/// Role of a route in a protected circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteRole {
    Working,
    Protection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    pub role: RouteRole,
    pub path: Vec<PathElement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub level: CustomerLevel,
}

/// Kind of line sold (DOMAIN.md "Who uses it").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    Data,
    Internet,
}

/// A customer circuit. With one route it is unprotected; with a working and a protection
/// route (1+1 or ring protection) it is down only when every route is hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Circuit {
    pub circuit_id: String,
    pub customer: Customer,
    pub assurance_level: AssuranceLevel,
    pub scope: Scope,
    pub service: ServiceKind,
    pub routes: Vec<Route>,
}

impl Circuit {
    /// Is the circuit protected (more than one route)?
    pub fn is_protected(&self) -> bool {
        self.routes.len() > 1
    }
}

/// One record of the inventory stream: a circuit added or changed, or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryChange {
    Upsert(Box<Circuit>),
    Delete { circuit_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(kind: ObjectKind, id: &str) -> PathElement {
        PathElement {
            kind,
            id: id.into(),
            domain: None,
            ne_type: None,
            ne: None,
            card: None,
        }
    }

    #[test]
    fn port_is_hit_by_its_card_and_ne() {
        let got = el(ObjectKind::Port, "NE1/3/2").impacting_objects();
        assert_eq!(got, vec!["NE1", "NE1/3", "NE1/3/2"]);
    }

    #[test]
    fn explicit_parents_win_and_links_have_none() {
        let mut p = el(ObjectKind::Port, "p-77");
        p.card = Some("card-9".into());
        p.ne = Some("ne-a".into());
        assert_eq!(p.impacting_objects(), vec!["card-9", "ne-a", "p-77"]);
        assert_eq!(
            el(ObjectKind::Link, "L/1").impacting_objects(),
            vec!["L/1"]
        );
    }
}
