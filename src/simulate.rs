//! The alarm simulator: a realistic network with customer circuits over it, and the alarm
//! traffic an NMS would send for it. Pure and seeded: the same seed (and the same
//! linewatch version) gives the same network and the same traffic; the `simulate` command
//! writes it to Kafka at a target rate or to replay files.
//!
//! The network: access rings (SDH, PTN or OTN) of access NEs with cards and ports, each
//! ring homed on an aggregation NE over ring links, aggregation NEs on core routers (PEs)
//! over core links, and one CPE per circuit at the customer's site. A circuit's working
//! route is CPE → access port → ring link → aggregation NE → core link → PE port; AAA and
//! AA circuits are protected over the ring's other side and a second aggregation NE.
//! Customer levels and assurance levels are drawn within the caps of DOMAIN.md (gold ≤ 5 %
//! of customers, silver ≤ 15 %, bronze ≤ 35 %; AAA ≤ 10 % of circuits, AA ≤ 20 %).
//!
//! The traffic, in event-time order: background noise (warnings, which affect no
//! service), fibre cuts (LOS on a ring or core link with the consequential AIS
//! of every NE behind it), card failures, flapping ports, CPE power-offs at the customer
//! (a customer-side cause), planned works announced with and without enough notice, and
//! alarms that arrive late or out of order (a clear before its raise).

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub circuits: usize,
    /// Access NEs per ring.
    pub ring_size: usize,
    /// When the traffic starts (event time).
    pub start: DateTime<Utc>,
    /// How long it lasts (event time).
    pub duration: Duration,
    /// Background alarm messages per second (noise).
    pub noise_per_second: f64,
    /// Faults (cuts, card failures, flaps, power-offs) per hour.
    pub faults_per_hour: f64,
    /// Planned works per day.
    pub works_per_day: f64,
    /// The longest a fault lasts (cuts, card failures, power-offs, late ports); each lasts
    /// from 2 minutes to this, drawn uniformly. Shorter faults reach a steady state sooner
    /// (the soak uses that).
    pub longest_fault: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            circuits: 200,
            ring_size: 6,
            start: DateTime::<Utc>::UNIX_EPOCH,
            duration: Duration::hours(1),
            noise_per_second: 2.0,
            faults_per_hour: 30.0,
            works_per_day: 4.0,
            longest_fault: Duration::hours(4),
        }
    }
}

/// Which input topic a simulated record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimStream {
    Alarms,
    Maintenance,
}

/// One simulated record: its event time, when the NMS publishes it (later for a late
/// alarm), its topic, key and value.
#[derive(Debug, Clone)]
pub struct SimRecord {
    pub event_time: DateTime<Utc>,
    pub publish_at: DateTime<Utc>,
    pub stream: SimStream,
    pub key: String,
    pub value: Value,
}

/// The network's objects, by role.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Per ring: its technology, its access NEs and its ring links.
    pub rings: Vec<Ring>,
    pub aggregation: Vec<String>,
    pub core_links: Vec<String>,
    /// Inventory records (circuit JSON, keyed by circuit id).
    pub circuits: Vec<(String, Value)>,
    /// Per circuit: (CPE, access port).
    pub edges: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Ring {
    pub tech: &'static str,
    pub nes: Vec<String>,
    pub links: Vec<String>,
    pub home: usize,
}

const CARDS: usize = 4;
const PORTS: usize = 16;

/// Draw a customer level within the caps (5 % gold, 15 % silver, 35 % bronze at most;
/// key and diamond accounts are rare).
fn customer_level(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..1000) {
        0..=4 => "key",
        5..=19 => "diamond",
        20..=59 => "gold",
        60..=179 => "silver",
        180..=479 => "bronze",
        _ => "standard",
    }
}

/// Draw an assurance level within the caps (AAA ≤ 10 %, AA ≤ 20 % of circuits).
fn assurance_level(rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..100) {
        0..=7 => "AAA",
        8..=25 => "AA",
        26..=55 => "A",
        _ => "ordinary",
    }
}

/// The network and its circuits.
pub fn topology(cfg: &SimConfig) -> Topology {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let ring_size = cfg.ring_size.max(2);
    let per_ne = CARDS * PORTS;
    let nes_needed = cfg.circuits.div_ceil(per_ne / 2).max(ring_size);
    let ring_count = nes_needed.div_ceil(ring_size);
    let agg_count = (ring_count / 4).max(2);
    let mut topo = Topology {
        aggregation: (0..agg_count).map(|a| format!("AGG-{a:03}")).collect(),
        core_links: (0..agg_count).map(|a| format!("CORE-L{a:03}")).collect(),
        ..Topology::default()
    };
    let techs = ["SDH", "PTN", "OTN"];
    for r in 0..ring_count {
        let nes: Vec<String> = (0..ring_size).map(|n| format!("ACC-{r:03}-{n}")).collect();
        let links = (0..=ring_size)
            .map(|l| format!("RING-{r:03}-L{l}"))
            .collect();
        topo.rings.push(Ring {
            tech: techs[r % techs.len()],
            nes,
            links,
            home: r % agg_count,
        });
    }
    let customers = (cfg.circuits / 3).max(1);
    let levels: Vec<&str> = (0..customers).map(|_| customer_level(&mut rng)).collect();
    for i in 0..cfg.circuits {
        let ring_index = i % ring_count;
        let ring = &topo.rings[ring_index];
        let ne_index = (i / ring_count) % ring_size;
        let slot = i / (ring_count * ring_size);
        let ne = &ring.nes[ne_index];
        let card = format!("{ne}/{}", slot / PORTS % CARDS);
        let port = format!("{card}/{}", slot % PORTS);
        let cpe = format!("CPE-{i:06}");
        let customer = rng.random_range(0..customers);
        let level = assurance_level(&mut rng);
        let home = ring.home;
        let other = (home + 1) % agg_count;
        let path = |link: &str, agg: usize| {
            json!([
                { "kind": "ne", "id": cpe, "domain": "cpe", "neType": "CPE" },
                { "kind": "port", "id": port, "domain": "transmission", "neType": ring.tech },
                { "kind": "link", "id": link, "domain": "transmission", "neType": ring.tech },
                { "kind": "ne", "id": topo.aggregation[agg], "domain": "transmission", "neType": "OTN" },
                { "kind": "link", "id": topo.core_links[agg], "domain": "transmission", "neType": "OTN" },
                { "kind": "port", "id": format!("PE-{agg:03}/1/{}", i % 48), "domain": "data", "neType": "router" },
            ])
        };
        // The working route leaves the access NE on the ring link towards the home side.
        let mut routes =
            vec![json!({ "role": "working", "path": path(&ring.links[ne_index], home) })];
        if matches!(level, "AAA" | "AA") {
            routes.push(json!({
                "role": "protection",
                "path": path(&ring.links[ne_index + 1], other),
            }));
        }
        let id = format!("DL-{i:06}");
        let scope = ["intra_city", "intra_province", "inter_province"][rng.random_range(0..3)];
        let value = json!({
            "circuitId": id,
            "customer": {
                "id": format!("CU-{customer:05}"),
                "name": format!("Customer {customer:05}"),
                "level": levels[customer],
            },
            "assuranceLevel": level,
            "scope": scope,
            "service": if i % 3 == 0 { "internet" } else { "data" },
            "routes": routes,
        });
        topo.circuits.push((id, value));
        topo.edges.push((cpe, port));
    }
    topo
}

fn alarm(
    id: &str,
    object: &str,
    cause: &str,
    severity: &str,
    raised: DateTime<Utc>,
    cleared: Option<DateTime<Utc>>,
) -> Value {
    let mut v = json!({
        "id": id, "probableCause": cause, "alarmType": "communicationsAlarm",
        "alarmedObject": { "id": object }, "sourceSystemId": "sim-nms",
        "alarmRaisedTime": raised.to_rfc3339(),
    });
    match cleared {
        Some(c) => {
            v["state"] = json!("cleared");
            v["perceivedSeverity"] = json!("cleared");
            v["alarmClearedTime"] = json!(c.to_rfc3339());
        }
        None => {
            v["state"] = json!("raised");
            v["perceivedSeverity"] = json!(severity);
        }
    }
    v
}

/// The alarm traffic and planned works over `topo`, sorted by publish time.
pub fn traffic(cfg: &SimConfig, topo: &Topology) -> Vec<SimRecord> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed_7a1f);
    let mut out = Vec::new();
    let span = cfg.duration.num_seconds().max(1);
    let end = cfg.start + cfg.duration;
    let push = |out: &mut Vec<SimRecord>, at: DateTime<Utc>, delay: i64, key: &str, v: Value| {
        if at <= end {
            out.push(SimRecord {
                event_time: at,
                publish_at: at + Duration::seconds(delay),
                stream: SimStream::Alarms,
                key: key.to_string(),
                value: v,
            });
        }
    };
    let random_time =
        |rng: &mut StdRng| cfg.start + Duration::milliseconds(rng.random_range(0..span * 1000));
    if topo.circuits.is_empty() || topo.rings.is_empty() {
        return out;
    }

    // Background noise: warnings on NEs, raised and cleared.
    let noise = (cfg.noise_per_second * span as f64) as usize;
    for n in 0..noise / 2 {
        let ring = &topo.rings[rng.random_range(0..topo.rings.len())];
        let ne = &ring.nes[rng.random_range(0..ring.nes.len())];
        let at = random_time(&mut rng);
        let (cause, severity) = [
            ("highTemperature", "warning"),
            ("fanDegraded", "warning"),
            ("powerSupplyDegraded", "warning"),
            ("laserBias", "warning"),
        ][rng.random_range(0..4)];
        let id = format!("N-{n}");
        push(
            &mut out,
            at,
            0,
            ne,
            alarm(&id, ne, cause, severity, at, None),
        );
        let cleared = at + Duration::seconds(rng.random_range(30..1800));
        push(
            &mut out,
            cleared,
            0,
            ne,
            alarm(&id, ne, cause, severity, at, Some(cleared)),
        );
    }

    // Faults. Each outage is a raise and its clear, published `delay` seconds after
    // their event times (a late NMS).
    let outage = |out: &mut Vec<SimRecord>,
                  id: &str,
                  object: &str,
                  cause: &str,
                  severity: &str,
                  (raised, cleared): (DateTime<Utc>, DateTime<Utc>),
                  delay: i64| {
        push(
            out,
            raised,
            delay,
            object,
            alarm(id, object, cause, severity, raised, None),
        );
        let clear = alarm(id, object, cause, severity, raised, Some(cleared));
        push(out, cleared, delay, object, clear);
    };
    let faults = (cfg.faults_per_hour * span as f64 / 3600.0).round() as usize;
    let longest_fault = cfg.longest_fault.num_seconds().max(121);
    for f in 0..faults {
        let at = random_time(&mut rng);
        let end = at + Duration::seconds(rng.random_range(120..longest_fault));
        let ring = &topo.rings[rng.random_range(0..topo.rings.len())];
        match rng.random_range(0..100) {
            // Fibre cut on a ring link: LOS on the link, AIS on the NEs beyond it. In one
            // cut of four the LOS reaches the NMS late, after its consequential AIS.
            0..=19 => {
                let l = rng.random_range(0..ring.links.len());
                let link = &ring.links[l];
                let late = if rng.random_range(0..4) == 0 { 5 } else { 0 };
                outage(
                    &mut out,
                    &format!("LOS-{f}"),
                    link,
                    "LOS",
                    "critical",
                    (at, end),
                    late,
                );
                for (k, ne) in ring.nes.iter().enumerate().skip(l.min(ring.nes.len() - 1)) {
                    let raised = at + Duration::seconds(1 + k as i64);
                    let cleared = end + Duration::seconds(2 + k as i64);
                    let id = format!("AIS-{f}-{k}");
                    outage(&mut out, &id, ne, "TU-AIS", "major", (raised, cleared), 0);
                }
            }
            // Core link cut: LOS only, a mass outage for the circuits homed behind it.
            20..=24 => {
                let link = &topo.core_links[rng.random_range(0..topo.core_links.len())];
                outage(
                    &mut out,
                    &format!("CLOS-{f}"),
                    link,
                    "LOS",
                    "critical",
                    (at, end),
                    0,
                );
            }
            // Card failure.
            25..=39 => {
                let ne = &ring.nes[rng.random_range(0..ring.nes.len())];
                let card = format!("{ne}/{}", rng.random_range(0..CARDS));
                let id = format!("CARD-{f}");
                outage(
                    &mut out,
                    &id,
                    &card,
                    "equipmentFailure",
                    "critical",
                    (at, end),
                    0,
                );
            }
            // Flapping port: short drops a minute apart.
            40..=59 => {
                let (_, port) = &topo.edges[rng.random_range(0..topo.edges.len())];
                for k in 0..rng.random_range(3..8) {
                    let down = at + Duration::seconds(60 * k);
                    let up = down + Duration::seconds(rng.random_range(5..40));
                    let id = format!("FLAP-{f}-{k}");
                    outage(&mut out, &id, port, "linkDown", "major", (down, up), 0);
                }
            }
            // CPE powered off at the customer's site.
            60..=84 => {
                let (cpe, _) = &topo.edges[rng.random_range(0..topo.edges.len())];
                outage(
                    &mut out,
                    &format!("PWR-{f}"),
                    cpe,
                    "dyingGasp",
                    "critical",
                    (at, end),
                    0,
                );
            }
            // A port failure whose alarms arrive late, the clear before the raise.
            _ => {
                let (_, port) = &topo.edges[rng.random_range(0..topo.edges.len())];
                let id = format!("LATE-{f}");
                let late = (end - at).num_seconds() + 30;
                push(
                    &mut out,
                    at,
                    late,
                    port,
                    alarm(&id, port, "LOS", "critical", at, None),
                );
                let clear = alarm(&id, port, "LOS", "critical", at, Some(end));
                push(&mut out, end, 10, port, clear);
            }
        }
    }

    // Planned works: on an aggregation NE or a ring, announced 10 days ahead (enough for
    // every level) or the day before (too late).
    let works = (cfg.works_per_day * span as f64 / 86400.0).ceil() as usize;
    for w in 0..works {
        let start = random_time(&mut rng) + Duration::hours(1);
        let late = rng.random_range(0..3) == 0;
        let notice = if late {
            start - Duration::hours(20)
        } else {
            start - Duration::days(10)
        };
        let object = if rng.random_range(0..2) == 0 {
            topo.aggregation[rng.random_range(0..topo.aggregation.len())].clone()
        } else {
            topo.rings[rng.random_range(0..topo.rings.len())].nes[0].clone()
        };
        let id = format!("W-{w}");
        let published = notice.max(cfg.start);
        out.push(SimRecord {
            event_time: published,
            publish_at: published,
            stream: SimStream::Maintenance,
            key: id.clone(),
            value: json!({
                "windowId": id, "objects": [object],
                "start": start.to_rfc3339(), "end": (start + Duration::hours(2)).to_rfc3339(),
                "noticeGivenAt": notice.to_rfc3339(),
            }),
        });
    }
    out.sort_by_key(|r| (r.publish_at, r.event_time));
    out
}

/// The fibre link that every circuit of a [`storm`] network crosses.
pub const STORM_FIBRE: &str = "FIBRE-STORM";

/// A network for measuring one mass outage: exactly `circuits` circuits, and every one of
/// them crosses the fibre link [`STORM_FIBRE`] on its only route (CPE, an access port of
/// its own, the fibre, a PE port), so that one LOS on the fibre takes all of them down and
/// touches nothing else. Customer and assurance levels are drawn as in [`topology`] (all
/// circuits unprotected, so that every one goes down), so that the incident's restoration
/// order has work to do. Inventory records keyed by circuit id, as [`Topology::circuits`].
pub fn storm(seed: u64, circuits: usize) -> Vec<(String, Value)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let customers = (circuits / 3).max(1);
    let levels: Vec<&str> = (0..customers).map(|_| customer_level(&mut rng)).collect();
    let per_ne = CARDS * PORTS;
    (0..circuits)
        .map(|i| {
            let port = format!("ACC-S{:05}/{}/{}", i / per_ne, i / PORTS % CARDS, i % PORTS);
            let customer = rng.random_range(0..customers);
            let level = assurance_level(&mut rng);
            let id = format!("DL-{i:06}");
            let scope = ["intra_city", "intra_province", "inter_province"][rng.random_range(0..3)];
            let value = json!({
                "circuitId": id,
                "customer": {
                    "id": format!("CU-{customer:05}"),
                    "name": format!("Customer {customer:05}"),
                    "level": levels[customer],
                },
                "assuranceLevel": level,
                "scope": scope,
                "service": if i % 3 == 0 { "internet" } else { "data" },
                "routes": [{ "role": "working", "path": [
                    { "kind": "ne", "id": format!("CPE-{i:06}"), "domain": "cpe", "neType": "CPE" },
                    { "kind": "port", "id": port, "domain": "transmission", "neType": "OTN" },
                    { "kind": "link", "id": STORM_FIBRE, "domain": "transmission", "neType": "OTN" },
                    { "kind": "port", "id": format!("PE-S/1/{}", i % 48), "domain": "data", "neType": "router" },
                ]}],
            });
            (id, value)
        })
        .collect()
}

/// The cut of a [`storm`] network's fibre: a critical LOS on [`STORM_FIBRE`] raised at
/// `raised`, and its clear at `cleared` (TMF642 alarms, as the NMS sends them).
pub fn storm_cut(raised: DateTime<Utc>, cleared: DateTime<Utc>) -> (Value, Value) {
    (
        alarm("CUT-1", STORM_FIBRE, "LOS", "critical", raised, None),
        alarm(
            "CUT-1",
            STORM_FIBRE,
            "LOS",
            "critical",
            raised,
            Some(cleared),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimConfig {
        SimConfig {
            seed: 42,
            circuits: 1000,
            start: "2026-03-02T00:00:00Z".parse().expect("time"),
            duration: Duration::hours(6),
            ..SimConfig::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_network_and_traffic() {
        let a = topology(&cfg());
        let b = topology(&cfg());
        assert_eq!(a.circuits, b.circuits);
        let ta = traffic(&cfg(), &a);
        let tb = traffic(&cfg(), &b);
        assert_eq!(ta.len(), tb.len());
        assert!(ta.iter().zip(&tb).all(|(x, y)| x.value == y.value));
        let other = topology(&SimConfig { seed: 43, ..cfg() });
        assert_ne!(a.circuits, other.circuits);
    }

    #[test]
    fn levels_stay_within_the_caps_of_domain_md() {
        let topo = topology(&cfg());
        let n = topo.circuits.len() as f64;
        let share = |level: &str| {
            topo.circuits
                .iter()
                .filter(|(_, c)| c["assuranceLevel"] == level)
                .count() as f64
                / n
        };
        assert!(share("AAA") <= 0.10, "AAA {}", share("AAA"));
        assert!(share("AA") <= 0.20, "AA {}", share("AA"));
        let mut customers = std::collections::BTreeMap::new();
        for (_, c) in &topo.circuits {
            customers.insert(
                c["customer"]["id"].as_str().unwrap_or_default().to_string(),
                c["customer"]["level"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        let m = customers.len() as f64;
        let cshare = |l: &str| customers.values().filter(|v| *v == l).count() as f64 / m;
        assert!(cshare("gold") <= 0.05 + 0.02, "gold {}", cshare("gold"));
        assert!(
            cshare("silver") <= 0.15 + 0.03,
            "silver {}",
            cshare("silver")
        );
        assert!(
            cshare("bronze") <= 0.35 + 0.04,
            "bronze {}",
            cshare("bronze")
        );
    }

    #[test]
    fn every_circuit_parses_and_protected_ones_have_two_routes() {
        for (key, value) in topology(&cfg()).circuits {
            let bytes = serde_json::to_vec(&value).expect("json");
            let parsed = crate::inventory::parse_circuit_record(Some(key.as_bytes()), Some(&bytes))
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let crate::inventory::InventoryChange::Upsert(c) = parsed else {
                panic!("an upsert");
            };
            let protected = matches!(
                c.assurance_level,
                crate::levels::AssuranceLevel::Aaa | crate::levels::AssuranceLevel::Aa
            );
            assert_eq!(c.routes.len(), if protected { 2 } else { 1 }, "{key}");
        }
    }

    #[test]
    fn traffic_has_every_kind_parses_and_is_in_publish_order() {
        let c = cfg();
        let topo = topology(&c);
        let t = traffic(&c, &topo);
        assert!(t.windows(2).all(|w| w[0].publish_at <= w[1].publish_at));
        let text: String = t.iter().map(|r| r.value.to_string()).collect();
        for kind in [
            "\"LOS-", "\"AIS-", "\"CARD-", "\"FLAP-", "\"PWR-", "\"LATE-", "\"N-", "W-",
        ] {
            assert!(text.contains(kind), "{kind} in the traffic");
        }
        assert!(t.iter().any(|r| r.publish_at > r.event_time), "late alarms");
        for r in &t {
            let bytes = r.value.to_string().into_bytes();
            match r.stream {
                SimStream::Alarms => {
                    for parsed in crate::alarm::parse_alarm_message(&bytes) {
                        parsed.unwrap_or_else(|e| panic!("{}: {e}", r.value));
                    }
                }
                SimStream::Maintenance => {
                    crate::maintenance::parse_maintenance_window(&bytes)
                        .unwrap_or_else(|e| panic!("{}: {e}", r.value));
                }
            }
        }
    }

    #[test]
    fn a_storm_network_has_exactly_its_circuits_on_the_fibre_and_the_cut_takes_them_down() {
        use crate::engine::{Engine, Output};
        use crate::intake::{decode, Stream};
        let n = 300;
        let circuits = storm(7, n);
        assert_eq!(circuits.len(), n);
        let t0: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
        let mut engine = Engine::new(crate::policy::Policy::builtin());
        for (key, value) in &circuits {
            let bytes = serde_json::to_vec(value).expect("json");
            for input in decode(Stream::Inventory, Some(key.as_bytes()), Some(&bytes)) {
                let input = input.unwrap_or_else(|e| panic!("{key}: {e}"));
                assert!(engine.handle(input, t0).is_ok());
            }
        }
        assert_eq!(engine.network().circuits_on(STORM_FIBRE).count(), n);
        let (raise, _) = storm_cut(t0, t0 + Duration::hours(1));
        let bytes = raise.to_string().into_bytes();
        let mut out = Vec::new();
        for input in decode(Stream::Alarms, None, Some(&bytes)) {
            out.extend(
                engine
                    .handle(input.expect("an alarm"), t0)
                    .expect("handled"),
            );
        }
        let tickets = out
            .iter()
            .filter(|o| matches!(o, Output::Ticket(_)))
            .count();
        assert_eq!(tickets, n, "one ticket per circuit");
        let incidents: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Incident(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].circuit_count, n);
        assert_eq!(incidents[0].down_count, n);
    }
}
