//! The records of a stage's changelog: their keys, and the envelope that names what each
//! holds.

use serde::Deserialize;

/// Changelog key of a partition's bookkeeping (watermarks, clock).
pub(super) const META_KEY: &[u8] = b"\xFFmeta";

/// Changelog key prefix of an input waiting for the clock.
pub(super) const PENDING_PREFIX: &[u8] = b"\xFFpending/";

/// The pending-input prefix of releases before 0.2, for their tombstones.
pub(super) const LEGACY_PENDING_PREFIX: &[u8] = b"~pending/";

/// Version of the changelog records' state bodies; a reader meeting another stops rather
/// than guess (see `topics/schemas/state.schema.json`).
pub(super) const STATE_VERSION: u32 = 1;

/// A changelog record to write: key, what it holds, value (`None`: a tombstone).
pub(super) type StateRecord = (Vec<u8>, StateKind, Option<Vec<u8>>);

/// What a changelog record holds: an entity of the stage (an alarm's fan-out, a circuit,
/// an incident), or the partition's bookkeeping. The envelope names it, so that a record
/// is read for what it is whatever its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StateKind {
    Entity,
    Meta,
    Pending,
    /// A circuit's last emitted figures (circuit-state changelog, key
    /// [`figures_key`]): apart from the circuit's record, so that they are written only
    /// when they change.
    Figures,
    /// A part of the members of an incident too large for one record (incident
    /// changelog, key [`members_key`]), read after the incident's own record.
    Members,
}

/// Prefix of the key of a part of an incident's members: the byte 0xFF, `members/`, the
/// part's number in six digits and `/`, then the root alarm key.
pub(super) const MEMBERS_PREFIX: &[u8] = b"\xFFmembers/";

/// The changelog key of part `index` of the members of the incident under `root_key`.
pub(super) fn members_key(root_key: &str, index: usize) -> Vec<u8> {
    let mut key = MEMBERS_PREFIX.to_vec();
    key.extend_from_slice(format!("{index:06}/").as_bytes());
    key.extend_from_slice(root_key.as_bytes());
    key
}

/// The part number and root alarm key of a members part's key; `None` for any other key.
pub(super) fn members_key_parts(key: &[u8]) -> Option<(usize, &str)> {
    let rest = key.strip_prefix(MEMBERS_PREFIX)?;
    let (index, root) = rest.split_at_checked(7)?;
    let index = std::str::from_utf8(index.strip_suffix(b"/")?)
        .ok()?
        .parse()
        .ok()?;
    Some((index, std::str::from_utf8(root).ok()?))
}

/// The envelope name of the entities of the incident changelog, the only one whose
/// entities may be written in parts.
pub(super) const INCIDENT_ENTITY: &str = "incident";

/// Suffix of the key of a circuit's figures record: the byte 0xFF, which no id (UTF-8
/// text) holds, then `figures`.
pub(super) const FIGURES_KEY_SUFFIX: &[u8] = b"\xFFfigures";

/// The changelog key of circuit `id`'s figures record.
pub(crate) fn figures_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + FIGURES_KEY_SUFFIX.len());
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(FIGURES_KEY_SUFFIX);
    key
}

/// The circuit id of a figures record's key; `None` for any other key.
pub(crate) fn figures_key_circuit(key: &[u8]) -> Option<&str> {
    key.strip_suffix(FIGURES_KEY_SUFFIX)
        .and_then(|id| std::str::from_utf8(id).ok())
}

/// The envelope name of the entities of the circuit-state changelog, the only one that
/// holds figures too.
pub(super) const CIRCUIT_ENTITY: &str = "circuit";

impl StateKind {
    /// The envelope name of the kind, `entity` being the name of the stage's entities.
    pub(super) fn name(self, entity: &'static str) -> &'static str {
        match self {
            StateKind::Entity => entity,
            StateKind::Meta => "meta",
            StateKind::Pending => "pending",
            StateKind::Figures => "figures",
            StateKind::Members => "members",
        }
    }

    /// The partition's bookkeeping (its buffer), not an entity's.
    pub(super) fn is_bookkeeping(self) -> bool {
        self == StateKind::Meta || self == StateKind::Pending
    }
}

/// Wrap a state body in its changelog envelope: `{"kind", "version", "state"}`.
pub(super) fn seal_state(kind: &str, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + 48);
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"version\":");
    out.extend_from_slice(STATE_VERSION.to_string().as_bytes());
    out.extend_from_slice(b",\"state\":");
    out.extend_from_slice(state);
    out.push(b'}');
    out
}

/// The kind and state body of a changelog record, if its kind is `entity` or the
/// bookkeeping's and its version the expected one.
pub(super) fn open_state<'a>(
    bytes: &'a [u8],
    entity: &str,
) -> Result<(StateKind, &'a [u8]), String> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
        version: u32,
        #[serde(borrow, deserialize_with = "raw_bytes")]
        state: &'a [u8],
    }
    fn raw_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        let raw: &'de serde_json::value::RawValue = Deserialize::deserialize(d)?;
        Ok(raw.get().as_bytes())
    }
    // The envelope as `seal_state` writes it is read by its layout: serde would read the
    // whole state once here to find where it ends, then once more to decode it.
    let e: Envelope<'_> = match sealed_parts(bytes) {
        Some((kind, version, state)) => Envelope {
            kind: std::borrow::Cow::Borrowed(kind),
            version,
            state,
        },
        None => serde_json::from_slice(bytes).map_err(|e| e.to_string())?,
    };
    let kind = match &*e.kind {
        k if k == entity => Some(StateKind::Entity),
        "meta" => Some(StateKind::Meta),
        "pending" => Some(StateKind::Pending),
        "figures" if entity == CIRCUIT_ENTITY => Some(StateKind::Figures),
        "members" if entity == INCIDENT_ENTITY => Some(StateKind::Members),
        _ => None,
    };
    match kind {
        // The body is read where it lies in the record, not copied.
        Some(kind) if e.version == STATE_VERSION => Ok((kind, e.state)),
        _ => Err(format!(
            "state of kind {:?} version {}, expected {entity:?}, \"meta\", \"pending\", \
             (circuits) \"figures\" or (incidents) \"members\" version {STATE_VERSION}",
            e.kind, e.version
        )),
    }
}

/// The kind, version and state body of a record laid out exactly as [`seal_state`] writes
/// it: `{"kind":"<kind>","version":<digits>,"state":<body>}`, the kind plain ASCII letters.
/// `None` for any other layout (read by serde then). The body is not checked here: its
/// reader parses it.
fn sealed_parts(bytes: &[u8]) -> Option<(&str, u32, &[u8])> {
    let rest = bytes.strip_prefix(b"{\"kind\":\"")?;
    let end = rest.iter().position(|b| !b.is_ascii_alphabetic())?;
    let (kind, rest) = rest.split_at(end);
    let rest = rest.strip_prefix(b"\",\"version\":")?;
    let digits = rest.iter().position(|b| !b.is_ascii_digit())?;
    let (version, rest) = rest.split_at(digits);
    let version = std::str::from_utf8(version).ok()?.parse().ok()?;
    let state = rest.strip_prefix(b",\"state\":")?.strip_suffix(b"}")?;
    Some((std::str::from_utf8(kind).ok()?, version, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_records_carry_their_kind_and_version() {
        let sealed = seal_state("circuit", br#"{"fault":null}"#);
        let value: serde_json::Value = serde_json::from_slice(&sealed).expect("JSON");
        assert_eq!(value["kind"], "circuit");
        assert_eq!(value["version"], STATE_VERSION);
        assert_eq!(
            open_state(&sealed, "circuit").expect("opens"),
            (StateKind::Entity, &br#"{"fault":null}"#[..])
        );
        assert!(open_state(&sealed, "fanout").is_err());
        let future = br#"{"kind":"circuit","version":99,"state":{}}"#;
        let err = open_state(future, "circuit").expect_err("unknown version");
        assert!(err.contains("version 99"), "{err}");
        // The kind comes from the envelope, never from the key.
        let meta = seal_state(StateKind::Meta.name(CIRCUIT_ENTITY), b"{}");
        assert_eq!(
            open_state(&meta, "circuit").expect("opens").0,
            StateKind::Meta
        );
        assert_eq!(StateKind::Pending.name("incident"), "pending");
        assert_eq!(StateKind::Entity.name("incident"), "incident");
    }

    #[test]
    fn an_envelope_is_read_alike_by_its_layout_and_by_serde() {
        let state = br#"{"fault":{"id":"a\"}b","x":[1,2]},"k":"}"}"#;
        let sealed = seal_state("circuit", state);
        assert_eq!(
            sealed_parts(&sealed),
            Some(("circuit", STATE_VERSION, &state[..]))
        );
        assert_eq!(
            open_state(&sealed, "circuit").expect("opens"),
            (StateKind::Entity, &state[..])
        );
        // Other layouts (spaces, another field order) are read by serde, to the same body.
        let spaced = br#"{ "kind": "circuit", "version": 1, "state": {"fault":null} }"#;
        assert_eq!(sealed_parts(spaced), None);
        assert_eq!(
            open_state(spaced, "circuit").expect("opens"),
            (StateKind::Entity, &br#"{"fault":null}"#[..])
        );
        let reordered = br#"{"version":1,"state":{"fault":null},"kind":"circuit"}"#;
        assert_eq!(
            open_state(reordered, "circuit").expect("opens"),
            (StateKind::Entity, &br#"{"fault":null}"#[..])
        );
        // A kind with an escape is no layout match, and no kind this reader knows.
        let escaped = br#"{"kind":"circ\u0075it","version":1,"state":{}}"#;
        assert_eq!(sealed_parts(escaped), None);
        assert_eq!(
            open_state(escaped, "circuit").expect("opens").0,
            StateKind::Entity
        );
        // Truncated before its body's end: the layout does not hold, and serde refuses it.
        assert!(open_state(br#"{"kind":"circuit","version":1,"state":"#, "circuit").is_err());
    }

    #[test]
    fn a_circuits_figures_have_a_key_and_kind_of_their_own() {
        let key = figures_key("DL-000001");
        assert_eq!(figures_key_circuit(&key), Some("DL-000001"));
        // No id can end like it: ids are UTF-8 text, which never holds the byte 0xFF.
        assert_eq!(figures_key_circuit(b"DL-000001"), None);
        assert_eq!(figures_key_circuit(b"DL-figures"), None);
        let sealed = seal_state(StateKind::Figures.name(CIRCUIT_ENTITY), b"{}");
        assert_eq!(
            open_state(&sealed, "circuit").expect("opens").0,
            StateKind::Figures
        );
        // Only the circuit-state changelog holds figures.
        assert!(open_state(&sealed, "incident").is_err());
    }
}
