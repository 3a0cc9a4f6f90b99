//! The circuit inventory: customer circuits and the network objects their paths use.
//!
//! Object naming: a path element is an NE, a card, a port or a link. Cards and ports name
//! their parents with `/`: card "NE1/3" sits in NE "NE1", port "NE1/3/2" on that card. A
//! path element may also name its `ne` and `card` explicitly, which wins over the naming
//! convention. An alarm on an object hits every circuit whose path uses that object or an
//! object below it (see [`PathElement::impacting_objects`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::levels::{AssuranceLevel, CustomerLevel, Scope};
use crate::rejection::json::{self, Obj};
use crate::rejection::{RejectReason, DEFAULT_MAX_MESSAGE_BYTES};

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
        let (card, ne) = self.parents();
        let mut out: Vec<String> = [Some(self.id.as_str()), card, ne]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The objects above this element whose alarms hit it, as (card, NE): a port's card
    /// and NE, a card's NE; none for an NE or a link. A parent named explicitly wins over
    /// the `/` naming convention.
    pub fn parents(&self) -> (Option<&str>, Option<&str>) {
        match self.kind {
            ObjectKind::Ne | ObjectKind::Link => (None, None),
            ObjectKind::Card => (None, self.ne.as_deref().or_else(|| parent_of(&self.id))),
            ObjectKind::Port => {
                let card = self.card.as_deref().or_else(|| parent_of(&self.id));
                let ne = self.ne.as_deref().or_else(|| card.and_then(parent_of));
                (card, ne)
            }
        }
    }
}

fn parent_of(id: &str) -> Option<&str> {
    id.rsplit_once('/')
        .map(|(parent, _)| parent)
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

// ---------------------------------------------------------------------------------------
// Parsing: records of the compacted `inventory.circuits` topic (or of an inventory file).
// ---------------------------------------------------------------------------------------

/// Field names of a [`Circuit`] record (camelCase, as the serde attributes above say).
const CIRCUIT_FIELDS: &[&str] = &[
    "circuitId",
    "customer",
    "assuranceLevel",
    "scope",
    "service",
    "routes",
    "deleted",
];
const CUSTOMER_FIELDS: &[&str] = &["id", "name", "level"];
const ROUTE_FIELDS: &[&str] = &["role", "path"];
const ELEMENT_FIELDS: &[&str] = &["kind", "id", "domain", "neType", "ne", "card"];
const DELETE_FIELDS: &[&str] = &["circuitId", "deleted"];

const CUSTOMER_LEVELS: &[(&str, CustomerLevel)] = &[
    ("key", CustomerLevel::Key),
    ("diamond", CustomerLevel::Diamond),
    ("gold", CustomerLevel::Gold),
    ("silver", CustomerLevel::Silver),
    ("bronze", CustomerLevel::Bronze),
    ("standard", CustomerLevel::Standard),
];
const ASSURANCE_LEVELS: &[(&str, AssuranceLevel)] = &[
    ("AAA", AssuranceLevel::Aaa),
    ("AA", AssuranceLevel::Aa),
    ("A", AssuranceLevel::A),
    ("ordinary", AssuranceLevel::Ordinary),
];
const SCOPES: &[(&str, Scope)] = &[
    ("intra_city", Scope::IntraCity),
    ("intra_province", Scope::IntraProvince),
    ("inter_province", Scope::InterProvince),
];
const SERVICES: &[(&str, ServiceKind)] = &[
    ("data", ServiceKind::Data),
    ("internet", ServiceKind::Internet),
];
const ROLES: &[(&str, RouteRole)] = &[
    ("working", RouteRole::Working),
    ("protection", RouteRole::Protection),
];
const KINDS: &[(&str, ObjectKind)] = &[
    ("ne", ObjectKind::Ne),
    ("card", ObjectKind::Card),
    ("port", ObjectKind::Port),
    ("link", ObjectKind::Link),
];

/// Parses one record of the inventory topic. The key is the circuit id (the topic is
/// compacted by it); the value is the circuit as camelCase JSON (the serde form of
/// [`Circuit`]), or a delete.
///
/// - `value == None` (a Kafka tombstone) deletes the circuit named by the key.
/// - `{"circuitId": "…", "deleted": true}` also deletes (files have no tombstones).
///   `"deleted": false` may stand in a full circuit record and means nothing.
/// - Anything else must be a full circuit. Checked here, so the engine never meets them:
///   ids are not blank; there is at least one route; every route has a non-empty path and
///   no object twice on it (a hop listed twice is a data error that would double-count);
///   at most one route is `working`; unknown fields are refused (a misspelt optional field
///   would otherwise vanish); the key, when present, equals `circuitId`.
///   Enumerated values are compared without regard to letter case. Blank optional strings
///   of a path element (`ne: ""`) read as absent, so they cannot name a phantom parent.
///
/// The size limit of [`DEFAULT_MAX_MESSAGE_BYTES`] applies to the value.
///
/// # Errors
/// A [`RejectReason`] naming the field by its path (`routes[1].path[0].kind`); for a key
/// that is not UTF-8, or that names another circuit than the value, the field is `key`.
pub fn parse_circuit_record(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<InventoryChange, RejectReason> {
    let key = match key {
        None | Some([]) => None,
        Some(k) => Some(std::str::from_utf8(k).map_err(|_| RejectReason::WrongType {
            field: "key".into(),
            expected: "UTF-8 text",
            got: format!("{} bytes that are not UTF-8", k.len()),
        })?),
    };
    let Some(value) = value else {
        return match key {
            Some(k) if !k.trim().is_empty() => Ok(InventoryChange::Delete {
                circuit_id: k.to_string(),
            }),
            _ => Err(RejectReason::Invalid {
                field: "key".into(),
                problem: "a tombstone (null value) must carry the circuit id as its key".into(),
            }),
        };
    };
    if value.iter().all(u8::is_ascii_whitespace) {
        return Err(RejectReason::Invalid {
            field: "value".into(),
            problem: "the value is empty; to delete a circuit send a tombstone (null value) \
                      or {\"circuitId\": \"…\", \"deleted\": true}"
                .into(),
        });
    }
    match wire::decode(key, value) {
        Some(change) => Ok(change),
        None => parse_tree(key, value),
    }
}

/// [`parse_circuit_record`] of a value that is not blank, through a `serde_json::Value`
/// tree: the parser of every record the fast path ([`wire`]) leaves, and of every reason.
fn parse_tree(key: Option<&str>, value: &[u8]) -> Result<InventoryChange, RejectReason> {
    let root = json::parse(value, DEFAULT_MAX_MESSAGE_BYTES)?;
    let o = Obj::at(String::new(), &root)?;
    let change = if o.opt_bool("deleted")? == Some(true) {
        o.deny_unknown(DELETE_FIELDS)?;
        InventoryChange::Delete {
            circuit_id: o.req_str("circuitId")?.to_string(),
        }
    } else {
        InventoryChange::Upsert(Box::new(parse_circuit(&o)?))
    };
    let id = match &change {
        InventoryChange::Upsert(c) => &c.circuit_id,
        InventoryChange::Delete { circuit_id } => circuit_id,
    };
    match key {
        Some(k) if k != id => Err(RejectReason::KeyMismatch {
            field: "circuitId".into(),
            value: json::show(id),
            key: json::show(k),
        }),
        _ => Ok(change),
    }
}

/// The fast path of [`parse_circuit_record`]: a record decoded straight from its bytes into
/// typed structs that borrow its text, without the `serde_json::Value` tree (which cost one
/// allocation per key and per value, and an owned field path per route and path element).
///
/// It only ever accepts: a record it does not take (any rule broken, but also a duplicate
/// key, a number where a string goes, a delete) goes to the tree-based parser, which
/// accepts it or writes the reason, so that reasons keep their text and their field
/// paths. What it accepts, the tree-based parser accepts too, with the same result (tests
/// below hold the two together on the fixtures and on mutations of them).
mod wire {
    use std::borrow::Cow;

    use serde::Deserialize;

    use super::{
        Circuit, Customer, InventoryChange, PathElement, Route, RouteRole, ASSURANCE_LEVELS,
        CUSTOMER_LEVELS, KINDS, ROLES, SCOPES, SERVICES,
    };
    use crate::rejection::DEFAULT_MAX_MESSAGE_BYTES;

    /// A JSON string, borrowed from the record unless it has escapes. (A bare
    /// `Option<Cow<str>>` would always be copied out: serde borrows a `Cow` only as a field
    /// of its own, not inside an `Option`.)
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

    // Every field is optional here so that `null` reads as absent, as in the tree-based
    // parser; a required field found missing sends the record to that parser.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct CircuitWire<'a> {
        #[serde(borrow, default)]
        circuit_id: Option<Text<'a>>,
        #[serde(borrow, default)]
        customer: Option<CustomerWire<'a>>,
        #[serde(borrow, default)]
        assurance_level: Option<Text<'a>>,
        #[serde(borrow, default)]
        scope: Option<Text<'a>>,
        #[serde(borrow, default)]
        service: Option<Text<'a>>,
        #[serde(borrow, default)]
        routes: Option<Vec<RouteWire<'a>>>,
        #[serde(default)]
        deleted: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CustomerWire<'a> {
        #[serde(borrow, default)]
        id: Option<Text<'a>>,
        #[serde(borrow, default)]
        name: Option<Text<'a>>,
        #[serde(borrow, default)]
        level: Option<Text<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RouteWire<'a> {
        #[serde(borrow, default)]
        role: Option<Text<'a>>,
        #[serde(borrow, default)]
        path: Option<Vec<ElementWire<'a>>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct ElementWire<'a> {
        #[serde(borrow, default)]
        kind: Option<Text<'a>>,
        #[serde(borrow, default)]
        id: Option<Text<'a>>,
        #[serde(borrow, default)]
        domain: Option<Text<'a>>,
        #[serde(borrow, default)]
        ne_type: Option<Text<'a>>,
        #[serde(borrow, default)]
        ne: Option<Text<'a>>,
        #[serde(borrow, default)]
        card: Option<Text<'a>>,
    }

    /// The circuit the record upserts, or `None` when the tree-based parser must decide.
    pub(super) fn decode(key: Option<&str>, value: &[u8]) -> Option<InventoryChange> {
        if value.len() > DEFAULT_MAX_MESSAGE_BYTES {
            return None;
        }
        let body = value.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(value);
        let w: CircuitWire<'_> = serde_json::from_slice(body).ok()?;
        if w.deleted == Some(true) {
            return None;
        }
        let circuit_id = non_blank(w.circuit_id)?;
        if key.is_some_and(|k| k != circuit_id) {
            return None;
        }
        let c = w.customer?;
        let customer = Customer {
            id: non_blank(c.id)?,
            name: c.name?.0.into_owned(),
            level: choice(c.level?, CUSTOMER_LEVELS)?,
        };
        let assurance_level = choice(w.assurance_level?, ASSURANCE_LEVELS)?;
        let scope = choice(w.scope?, SCOPES)?;
        let service = choice(w.service?, SERVICES)?;
        let raw_routes = w.routes?;
        if raw_routes.is_empty() {
            return None;
        }
        let mut routes = Vec::with_capacity(raw_routes.len());
        for r in raw_routes {
            let role = choice(r.role?, ROLES)?;
            if role == RouteRole::Working && routes.iter().any(|r: &Route| r.role == role) {
                return None;
            }
            routes.push(Route {
                role,
                path: path(r.path?)?,
            });
        }
        Some(InventoryChange::Upsert(Box::new(Circuit {
            circuit_id,
            customer,
            assurance_level,
            scope,
            service,
            routes,
        })))
    }

    fn path(raw: Vec<ElementWire<'_>>) -> Option<Vec<PathElement>> {
        if raw.is_empty() {
            return None;
        }
        let mut path: Vec<PathElement> = Vec::with_capacity(raw.len());
        for e in raw {
            let id = non_blank(e.id)?;
            // Paths are short: a scan beats hashing them (the set is for the rare long one).
            let seen = if path.len() < 32 {
                path.iter().any(|p| p.id == id)
            } else {
                path.iter()
                    .map(|p| p.id.as_str())
                    .collect::<std::collections::HashSet<_>>()
                    .contains(id.as_str())
            };
            if seen {
                return None;
            }
            path.push(PathElement {
                kind: choice(e.kind?, KINDS)?,
                id,
                domain: optional(e.domain),
                ne_type: optional(e.ne_type),
                ne: optional(e.ne),
                card: optional(e.card),
            });
        }
        Some(path)
    }

    /// A required string that is not blank (`req_str`).
    fn non_blank(s: Option<Text<'_>>) -> Option<String> {
        s.filter(|s| !s.0.trim().is_empty())
            .map(|s| s.0.into_owned())
    }

    /// An optional string; blank reads as absent (`opt_str`).
    fn optional(s: Option<Text<'_>>) -> Option<String> {
        non_blank(s)
    }

    /// One of `choices`, without regard to letter case (`req_enum`).
    fn choice<T: Copy>(s: Text<'_>, choices: &[(&str, T)]) -> Option<T> {
        let s = s.0.trim();
        choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(_, v)| *v)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn text_is_borrowed_unless_escaped() {
            let plain: Option<Text<'_>> = serde_json::from_str(r#""NE-1/2""#).unwrap();
            assert!(matches!(plain, Some(Text(Cow::Borrowed("NE-1/2")))));
            let escaped: Option<Text<'_>> = serde_json::from_str(r#""NE-1\/2""#).unwrap();
            assert!(matches!(escaped, Some(Text(Cow::Owned(s))) if s == "NE-1/2"));
            let null: Option<Text<'_>> = serde_json::from_str("null").unwrap();
            assert!(null.is_none());
        }
    }
}

fn parse_circuit(o: &Obj<'_>) -> Result<Circuit, RejectReason> {
    o.deny_unknown(CIRCUIT_FIELDS)?;
    let circuit_id = o.req_str("circuitId")?.to_string();
    let c = o.req_obj("customer")?;
    c.deny_unknown(CUSTOMER_FIELDS)?;
    let customer = Customer {
        id: c.req_str("id")?.to_string(),
        name: c.req_string_any("name")?.to_string(),
        level: c.req_enum("level", CUSTOMER_LEVELS)?,
    };
    let assurance_level = o.req_enum("assuranceLevel", ASSURANCE_LEVELS)?;
    let scope = o.req_enum("scope", SCOPES)?;
    let service = o.req_enum("service", SERVICES)?;
    let raw_routes = o.req_array("routes")?;
    if raw_routes.is_empty() {
        return Err(RejectReason::Invalid {
            field: o.field("routes"),
            problem: "a circuit needs at least one route".into(),
        });
    }
    let mut routes = Vec::with_capacity(raw_routes.len());
    let mut working: Option<usize> = None;
    for (i, raw) in raw_routes.iter().enumerate() {
        let r = Obj::at(json::index(&o.field("routes"), i), raw)?;
        let route = parse_route(&r)?;
        if route.role == RouteRole::Working {
            if let Some(first) = working {
                return Err(RejectReason::Invalid {
                    field: o.field("routes"),
                    problem: format!(
                        "routes[{first}] and routes[{i}] are both `working`; at most one route \
                         may be working, the others are `protection`"
                    ),
                });
            }
            working = Some(i);
        }
        routes.push(route);
    }
    Ok(Circuit {
        circuit_id,
        customer,
        assurance_level,
        scope,
        service,
        routes,
    })
}

fn parse_route(r: &Obj<'_>) -> Result<Route, RejectReason> {
    r.deny_unknown(ROUTE_FIELDS)?;
    let role = r.req_enum("role", ROLES)?;
    let raw_path = r.req_array("path")?;
    if raw_path.is_empty() {
        return Err(RejectReason::Invalid {
            field: r.field("path"),
            problem: "a route needs at least one path element".into(),
        });
    }
    let mut path: Vec<PathElement> = Vec::with_capacity(raw_path.len());
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(raw_path.len());
    for (j, raw) in raw_path.iter().enumerate() {
        let e = Obj::at(json::index(&r.field("path"), j), raw)?;
        e.deny_unknown(ELEMENT_FIELDS)?;
        let el = PathElement {
            kind: e.req_enum("kind", KINDS)?,
            id: e.req_str("id")?.to_string(),
            domain: e.opt_str("domain")?.map(str::to_string),
            ne_type: e.opt_str("neType")?.map(str::to_string),
            ne: e.opt_str("ne")?.map(str::to_string),
            card: e.opt_str("card")?.map(str::to_string),
        };
        let id = e.req_str("id")?;
        if let Some(k) = seen.insert(id, j) {
            return Err(RejectReason::Invalid {
                field: e.field("id"),
                problem: format!(
                    "{} is already path[{k}] of this route; an object appears once per route",
                    json::show(id)
                ),
            });
        }
        path.push(el);
    }
    Ok(Route { role, path })
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
        assert_eq!(el(ObjectKind::Link, "L/1").impacting_objects(), vec!["L/1"]);
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;
    use crate::rejection::RejectCode;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const PROTECTED: &str =
        include_str!("../tests/fixtures/inventory/valid/circuit_protected_aaa.json");
    const INTERNET: &str =
        include_str!("../tests/fixtures/inventory/valid/circuit_internet_unprotected.json");

    fn circuit() -> Value {
        serde_json::from_str(PROTECTED).unwrap()
    }

    fn parse(v: &Value) -> Result<InventoryChange, RejectReason> {
        parse_circuit_record(None, Some(v.to_string().as_bytes()))
    }

    fn reason(v: &Value) -> RejectReason {
        parse(v).unwrap_err()
    }

    #[test]
    fn fixtures_parse_and_agree_with_serde() {
        for src in [PROTECTED, INTERNET] {
            let Ok(InventoryChange::Upsert(c)) = parse_circuit_record(None, Some(src.as_bytes()))
            else {
                panic!("not an upsert: {src}");
            };
            // The hand-written parser and the serde attributes of `Circuit` read alike...
            let by_serde: Circuit = serde_json::from_str(src).unwrap();
            assert_eq!(*c, by_serde);
            // ...and whatever serde writes, the parser reads back.
            let again = serde_json::to_vec(&*c).unwrap();
            assert_eq!(
                parse_circuit_record(Some(c.circuit_id.as_bytes()), Some(&again)),
                Ok(InventoryChange::Upsert(c.clone()))
            );
        }
        let c: Circuit = serde_json::from_str(PROTECTED).unwrap();
        assert!(c.is_protected());
        assert_eq!(c.assurance_level, AssuranceLevel::Aaa);
        assert_eq!(c.routes[1].path[3].ne.as_deref(), Some("GZ-PY-OTN-02"));
    }

    #[test]
    fn deletes() {
        assert_eq!(
            parse_circuit_record(Some(b"C-9"), None),
            Ok(InventoryChange::Delete {
                circuit_id: "C-9".into()
            })
        );
        let err = parse_circuit_record(None, None).unwrap_err();
        assert_eq!(err.code(), RejectCode::Invalid);
        assert!(err.to_string().contains("tombstone"), "{err}");
        assert_eq!(
            parse_circuit_record(Some(b"C-9"), Some(br#"{"circuitId":"C-9","deleted":true}"#)),
            Ok(InventoryChange::Delete {
                circuit_id: "C-9".into()
            })
        );
        let err = parse_circuit_record(None, Some(br#"{"circuitId":"C-9","deleted":true,"x":1}"#))
            .unwrap_err();
        assert_eq!(err.code(), RejectCode::UnknownField);
        let err = parse_circuit_record(None, Some(br#"{"circuitId":"C-9","deleted":"yes"}"#))
            .unwrap_err();
        assert_eq!(err.code(), RejectCode::WrongType);
        // `deleted: false` is allowed in a full record and changes nothing.
        let mut v = circuit();
        v["deleted"] = json!(false);
        assert!(matches!(parse(&v), Ok(InventoryChange::Upsert(_))));
        // An empty value is not a tombstone, and the reason says how to delete.
        let err = parse_circuit_record(Some(b"C-9"), Some(b"")).unwrap_err();
        assert!(err.to_string().contains("tombstone"), "{err}");
    }

    #[test]
    fn key_must_match() {
        let err = parse_circuit_record(Some(b"OTHER"), Some(PROTECTED.as_bytes())).unwrap_err();
        assert_eq!(err.code(), RejectCode::KeyMismatch);
        assert_eq!(
            err.to_string(),
            "field `circuitId`: \"SZ-GZ-DL-000731\" does not match the record key \"OTHER\""
        );
        let err = parse_circuit_record(Some(&[0xff, 0xfe]), None).unwrap_err();
        assert_eq!(err.code(), RejectCode::WrongType);
        assert!(parse_circuit_record(Some(b""), Some(PROTECTED.as_bytes())).is_ok());
    }

    #[test]
    fn rules_of_a_circuit() {
        let mut v = circuit();
        v["circuitId"] = json!("");
        assert_eq!(reason(&v).code(), RejectCode::BadValue);

        let mut v = circuit();
        v["routes"] = json!([]);
        assert_eq!(
            reason(&v).to_string(),
            "field `routes`: a circuit needs at least one route"
        );

        let mut v = circuit();
        v["routes"][1]["path"] = json!([]);
        assert_eq!(
            reason(&v).to_string(),
            "field `routes[1].path`: a route needs at least one path element"
        );

        let mut v = circuit();
        v["routes"][1]["role"] = json!("working");
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::Invalid);
        assert!(err.to_string().contains("routes[0] and routes[1]"), "{err}");

        let mut v = circuit();
        v["routes"][0]["path"][4]["id"] = json!("SZ-FT-PTN-03/2/1");
        assert_eq!(
            reason(&v).to_string(),
            "field `routes[0].path[4].id`: \"SZ-FT-PTN-03/2/1\" is already path[1] of this \
             route; an object appears once per route"
        );
        // The same object on two different routes is normal (the shared CPE port).
        assert!(parse(&circuit()).is_ok());

        let mut v = circuit();
        v["routes"][0]["path"][0]["kind"] = json!("shelf");
        assert_eq!(
            reason(&v).to_string(),
            "field `routes[0].path[0].kind`: expected one of ne, card, port, link, got \"shelf\""
        );

        let mut v = circuit();
        v["assuranceLevel"] = json!("AAAA");
        assert_eq!(reason(&v).code(), RejectCode::BadValue);

        let mut v = circuit();
        v["routes"][0]["path"][0]["neTyp"] = json!("CPE");
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::UnknownField);
        assert!(err
            .to_string()
            .starts_with("field `routes[0].path[0].neTyp` is not allowed here"));

        let mut v = circuit();
        v["customer"].as_object_mut().unwrap().remove("level");
        assert_eq!(
            reason(&v).to_string(),
            "field `customer.level` is required but missing"
        );
    }

    #[test]
    fn lenient_where_harmless() {
        let mut v = circuit();
        v["assuranceLevel"] = json!("aaa");
        v["customer"]["level"] = json!("Gold");
        v["routes"][0]["path"][0]["ne"] = json!("");
        v["routes"][0]["path"][0]["card"] = Value::Null;
        let Ok(InventoryChange::Upsert(c)) = parse(&v) else {
            panic!("rejected")
        };
        assert_eq!(c.assurance_level, AssuranceLevel::Aaa);
        assert_eq!(c.customer.level, CustomerLevel::Gold);
        // A blank parent is no parent: it cannot become a phantom object "".
        assert_eq!(c.routes[0].path[0].ne, None);
        assert!(!c.routes[0].path[0]
            .impacting_objects()
            .contains(&String::new()));
    }

    /// Every record both parsers are held to: the result of [`parse_circuit_record`] (fast
    /// path first) is the tree-based parser's, reason text included. Returns whether the
    /// fast path took the record.
    fn same_as_tree(key: Option<&str>, value: &[u8]) -> bool {
        let got = parse_circuit_record(key.map(str::as_bytes), Some(value));
        if !value.iter().all(u8::is_ascii_whitespace) {
            assert_eq!(
                got,
                parse_tree(key, value),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        let fast = wire::decode(key, value);
        if let Some(fast) = &fast {
            assert_eq!(got.as_ref(), Ok(fast));
        }
        fast.is_some()
    }

    fn fixtures(dir: &str) -> Vec<Vec<u8>> {
        let dir = format!(
            "{}/tests/fixtures/inventory/{dir}",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{dir}");
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }

    #[test]
    fn the_fast_path_takes_valid_circuits_as_the_tree_reads_them() {
        for bytes in fixtures("valid") {
            let text = String::from_utf8(bytes.clone()).unwrap();
            let took = same_as_tree(None, &bytes);
            // Deletes are left to the tree; every circuit is taken.
            assert_eq!(took, !text.contains("\"deleted\""), "{text}");
        }
        let key = Some("SZ-GZ-DL-000731");
        assert!(same_as_tree(key, PROTECTED.as_bytes()));
        // Letter case, blanks and nulls where they are harmless, escapes, a byte-order
        // mark, `deleted: false`: all taken, read as the tree reads them.
        let mut v = circuit();
        v["assuranceLevel"] = json!(" aaa ");
        v["customer"]["level"] = json!("Gold");
        v["customer"]["name"] = json!("");
        v["routes"][0]["path"][0]["ne"] = json!("");
        v["routes"][0]["path"][0]["card"] = Value::Null;
        v["routes"][0]["path"][1]["domain"] = json!("  ");
        v["routes"][1]["path"][0]["neType"] = json!("Optical \"X\" \u{e9}");
        v["deleted"] = json!(false);
        let text = v.to_string();
        assert!(same_as_tree(None, text.as_bytes()));
        let escaped = text.replace("SZ-GZ-DL-000731", "SZ-GZ-DL-\\u0030\\u0030\\u00307\\/31");
        assert!(same_as_tree(None, escaped.as_bytes()));
        let with_bom = [&b"\xEF\xBB\xBF"[..], text.as_bytes()].concat();
        assert!(same_as_tree(None, &with_bom));
        // The key must name the circuit, or the tree writes the reason.
        assert!(!same_as_tree(Some("OTHER"), PROTECTED.as_bytes()));
    }

    #[test]
    fn the_fast_path_leaves_every_rejection_to_the_tree() {
        for dir in ["invalid", "invalid_semantic"] {
            for bytes in fixtures(dir) {
                assert!(!same_as_tree(None, &bytes));
                assert!(parse_tree(None, &bytes).is_err());
            }
        }
        // Each field of each level absent, null, blank, of the wrong type, unknown or
        // twice: whatever the tree says, the record's result is the tree's.
        let base = circuit();
        let mut objects: Vec<String> = vec![String::new(), "/customer".into()];
        for (r, route) in base["routes"].as_array().unwrap().iter().enumerate() {
            objects.push(format!("/routes/{r}"));
            for e in 0..route["path"].as_array().unwrap().len() {
                objects.push(format!("/routes/{r}/path/{e}"));
            }
        }
        let odd = [
            Value::Null,
            json!(""),
            json!(" "),
            json!(7),
            json!(true),
            json!([]),
            json!({}),
            json!("WORKING"),
            json!("x"),
        ];
        let mut cases = 0;
        for at in &objects {
            let keys: Vec<String> = base
                .pointer(at)
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            for k in keys
                .iter()
                .chain([&"deleted".to_string(), &"extra".to_string()])
            {
                let mut v = base.clone();
                v.pointer_mut(at)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(k);
                same_as_tree(None, v.to_string().as_bytes());
                for o in &odd {
                    let mut v = base.clone();
                    v.pointer_mut(at).unwrap()[k.as_str()] = o.clone();
                    same_as_tree(None, v.to_string().as_bytes());
                    cases += 1;
                }
                // The same key twice: the tree keeps the last; the fast path leaves it.
                let text = base.to_string();
                if let Some(i) = text.find(&format!("\"{k}\":")) {
                    let twice = format!("{}\"{k}\":null,{}", &text[..i], &text[i..]);
                    same_as_tree(None, twice.as_bytes());
                }
            }
        }
        assert!(cases > 500, "{cases}");
        // A delete, the size limit, not an object, trailing bytes.
        for text in [
            r#"{"circuitId":"C-9","deleted":true}"#.to_string(),
            r#"{"circuitId":"C-9","deleted":true,"routes":[]}"#.to_string(),
            format!("{PROTECTED}{}", " ".repeat(DEFAULT_MAX_MESSAGE_BYTES)),
            "[]".into(),
            format!("{PROTECTED}x"),
        ] {
            assert!(!same_as_tree(Some("C-9"), text.as_bytes()));
        }
    }

    proptest! {
        #[test]
        fn mutated_fixture_reads_as_the_tree_reads_it(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut bytes = PROTECTED.as_bytes().to_vec();
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            same_as_tree(None, &bytes);
        }

        #[test]
        fn arbitrary_records_never_panic(
            key in prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            value in prop::option::of(prop::collection::vec(any::<u8>(), 0..512)),
        ) {
            let _ = parse_circuit_record(key.as_deref(), value.as_deref());
        }

        #[test]
        fn mutated_fixture_never_panics(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut bytes = PROTECTED.as_bytes().to_vec();
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            if let Ok(InventoryChange::Upsert(c)) = parse_circuit_record(None, Some(&bytes)) {
                prop_assert!(!c.routes.is_empty());
                prop_assert!(c.routes.iter().all(|r| !r.path.is_empty()));
            }
        }
    }
}
