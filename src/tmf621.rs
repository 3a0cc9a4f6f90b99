//! The TMF621 version `tickets.events` speaks (issue 14, item 1).
//!
//! The engine builds its ticket events in the TMF621 **v4.0.0** form (the default, and the
//! form the engine compares, stores and hands to the incident stage). With
//! [`Tmf621Version::V5`], each event is rewritten at the edge, when it is serialized for the
//! topic or the replay file, into the **v5.0.1** form ([`to_v5`]):
//! - `@type` on the event (its `eventType`), on every `relatedEntity`, `relatedParty` and
//!   `troubleTicketRelationship` (v5's `Extensible` requires it); the ticket has its own;
//! - a `relatedEntity`'s reference nested under `entity` (an `EntityRef`), a
//!   `relatedParty`'s under `partyOrPartyRole`: a `PartyRoleRef` for the customer (in the
//!   Party model a customer is a role a party plays), a `PartyRef` for a team (an
//!   organisation);
//! - nothing else changes: the ticket's own fields, `fieldPath`, `slaEvent` and the
//!   extension objects (`sla`, `rootCause`, `incident`) are the same in both versions.
//!
//! Only the wire form changes: event ids, the order of events and the state are the same
//! whatever the version, so a ticketing system can be moved from one to the other by
//! restarting the service with the other setting.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The TMF621 version of the events on `tickets.events`. In the config file,
/// `tmf621_version = 5` or `"5"` (or `"5.0.1"`, `"v5"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Tmf621Version {
    /// TMF621 Trouble Ticket API v4.0.0 (the default).
    #[default]
    #[serde(rename = "4")]
    V4,
    /// TMF621 Trouble Ticket API v5.0.1.
    #[serde(rename = "5")]
    V5,
}

impl<'de> Deserialize<'de> for Tmf621Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string().parse(),
            Raw::Text(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl Tmf621Version {
    /// The version's name on the command line and in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Tmf621Version::V4 => "4",
            Tmf621Version::V5 => "5",
        }
    }
}

impl std::str::FromStr for Tmf621Version {
    type Err = String;

    /// `4` (or `4.0.0`, `v4`) and `5` (or `5.0.1`, `v5`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_start_matches(['v', 'V']) {
            "4" | "4.0.0" => Ok(Tmf621Version::V4),
            "5" | "5.0.1" => Ok(Tmf621Version::V5),
            _ => Err(format!(
                "unknown TMF621 version {s:?}; expected 4 (v4.0.0) or 5 (v5.0.1)"
            )),
        }
    }
}

impl std::fmt::Display for Tmf621Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ticket event (of a circuit's ticket or of an incident's parent ticket), serialized in
/// `version`'s form.
///
/// # Errors
/// Only if serde_json fails, which the ticket types do not allow in practice.
pub fn event_json<T: Serialize>(event: &T, version: Tmf621Version) -> serde_json::Result<Vec<u8>> {
    match version {
        Tmf621Version::V4 => serde_json::to_vec(event),
        Tmf621Version::V5 => serde_json::to_vec(&to_v5(serde_json::to_value(event)?)),
    }
}

/// `@type` of a v5 related entity, of the reference inside it, of a related party and of a
/// trouble ticket relationship.
pub const V5_RELATED_ENTITY: &str = "RelatedEntity";
pub const V5_ENTITY_REF: &str = "EntityRef";
pub const V5_RELATED_PARTY: &str = "RelatedPartyRefOrPartyRoleRef";
pub const V5_PARTY_REF: &str = "PartyRef";
pub const V5_PARTY_ROLE_REF: &str = "PartyRoleRef";
pub const V5_RELATIONSHIP: &str = "TroubleTicketRelationship";

/// Rewrite a v4 ticket event (as the engine serializes it) into its v5.0.1 form; see the
/// module documentation. A field that is not where the v4 form has it is left as it is.
pub fn to_v5(mut event: Value) -> Value {
    let Some(e) = event.as_object_mut() else {
        return event;
    };
    if let Some(kind) = e.get("eventType").cloned() {
        e.entry("@type").or_insert(kind);
    }
    let Some(ticket) = e
        .get_mut("event")
        .and_then(|b| b.get_mut("troubleTicket"))
        .and_then(Value::as_object_mut)
    else {
        return event;
    };
    if let Some(Value::Array(entities)) = ticket.get_mut("relatedEntity") {
        for r in entities.iter_mut() {
            if let Some(o) = r.as_object_mut() {
                nest(o, "entity", V5_RELATED_ENTITY, |_| V5_ENTITY_REF);
            }
        }
    }
    if let Some(Value::Array(parties)) = ticket.get_mut("relatedParty") {
        for r in parties.iter_mut() {
            if let Some(o) = r.as_object_mut() {
                nest(o, "partyOrPartyRole", V5_RELATED_PARTY, |referred| {
                    if referred == Some(crate::ticket::PARTY_CUSTOMER) {
                        V5_PARTY_ROLE_REF
                    } else {
                        V5_PARTY_REF
                    }
                });
            }
        }
    }
    if let Some(Value::Array(relations)) = ticket.get_mut("troubleTicketRelationship") {
        for r in relations.iter_mut() {
            if let Some(o) = r.as_object_mut() {
                o.entry("@type")
                    .or_insert_with(|| Value::from(V5_RELATIONSHIP));
            }
        }
    }
    event
}

/// A v4 reference `{id, name, role, @referredType}` becomes `{@type, role, <under>: {@type,
/// id, name, @referredType}}`: the role stays on the relation, the rest moves into the
/// reference, whose `@type` `ref_type` picks from the `@referredType`.
fn nest(
    o: &mut Map<String, Value>,
    under: &str,
    relation_type: &str,
    ref_type: impl Fn(Option<&str>) -> &'static str,
) {
    if o.contains_key(under) {
        return;
    }
    let role = o.remove("role");
    let mut reference = std::mem::take(o);
    let kind = ref_type(reference.get("@referredType").and_then(Value::as_str));
    reference.insert("@type".into(), Value::from(kind));
    o.insert("@type".into(), Value::from(relation_type));
    if let Some(role) = role {
        o.insert("role".into(), role);
    }
    o.insert(under.into(), Value::Object(reference));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_by_name() {
        for (s, v) in [
            ("4", Tmf621Version::V4),
            ("v4", Tmf621Version::V4),
            ("4.0.0", Tmf621Version::V4),
            ("5", Tmf621Version::V5),
            ("5.0.1", Tmf621Version::V5),
        ] {
            assert_eq!(s.parse::<Tmf621Version>(), Ok(v), "{s}");
        }
        assert!("3".parse::<Tmf621Version>().is_err());
        assert_eq!(Tmf621Version::default(), Tmf621Version::V4);
        for form in [json!("5"), json!(5), json!("5.0.1")] {
            let v: Tmf621Version = serde_json::from_value(form.clone()).expect("config form");
            assert_eq!(v, Tmf621Version::V5, "{form}");
        }
        assert!(serde_json::from_value::<Tmf621Version>(json!(6)).is_err());
    }

    #[test]
    fn references_are_nested_and_typed() {
        let v4 = json!({
            "eventId": "TT-1-0001",
            "eventType": "TroubleTicketCreateEvent",
            "event": {"troubleTicket": {
                "id": "TT-1",
                "@type": "DedicatedLineFaultTicket",
                "relatedEntity": [{"id": "C1", "role": "affectedCircuit", "@referredType": "Circuit"}],
                "relatedParty": [
                    {"id": "CUST-1", "name": "Acme", "role": "customer", "@referredType": "Customer"},
                    {"id": "team-a", "role": "leadTeam", "@referredType": "Organization"}
                ],
                "troubleTicketRelationship": [{"id": "INC-1", "relationshipType": "isParent"}]
            }}
        });
        let v5 = to_v5(v4);
        assert_eq!(v5["@type"], "TroubleTicketCreateEvent");
        let t = &v5["event"]["troubleTicket"];
        assert_eq!(t["@type"], "DedicatedLineFaultTicket");
        assert_eq!(
            t["relatedEntity"][0],
            json!({"@type": "RelatedEntity", "role": "affectedCircuit", "entity":
                {"@type": "EntityRef", "id": "C1", "@referredType": "Circuit"}})
        );
        assert_eq!(
            t["relatedParty"][0],
            json!({"@type": "RelatedPartyRefOrPartyRoleRef", "role": "customer", "partyOrPartyRole":
                {"@type": "PartyRoleRef", "id": "CUST-1", "name": "Acme", "@referredType": "Customer"}})
        );
        assert_eq!(
            t["relatedParty"][1]["partyOrPartyRole"]["@type"],
            "PartyRef"
        );
        assert_eq!(
            t["troubleTicketRelationship"][0],
            json!({"@type": "TroubleTicketRelationship", "id": "INC-1", "relationshipType": "isParent"})
        );
        // Applied twice, nothing moves again.
        assert_eq!(to_v5(v5.clone()), v5);
    }
}
