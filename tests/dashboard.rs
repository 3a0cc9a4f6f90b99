//! The monitoring files of the compose stack agree with the service (no Kafka, no Docker):
//! the Grafana dashboard (docker/grafana/dashboards/linewatch.json) queries only metrics that
//! linewatch exports (`linewatch::telemetry::METRIC_NAMES`) through the provisioned
//! Prometheus datasource (uid `prometheus`), Prometheus scrapes linewatch:9464/metrics, and
//! docker/compose.yaml publishes every port on 127.0.0.1 only.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use linewatch::telemetry::METRIC_NAMES;
use serde_json::Value;

const DASHBOARD: &str = "docker/grafana/dashboards/linewatch.json";
const PROMETHEUS: &str = "docker/prometheus/prometheus.yml";
const COMPOSE: &str = "docker/compose.yaml";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, rows and the panels nested in (collapsed) rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard.get("panels").expect("the dashboard has panels"),
        &mut out,
    );
    out
}

fn is_row(panel: &Value) -> bool {
    panel.get("type").and_then(Value::as_str) == Some("row")
}

fn title(panel: &Value) -> &str {
    panel
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("<untitled>")
}

/// The `expr` of each target of the panel itself (not of nested panels).
fn exprs(panel: &Value) -> Vec<&str> {
    panel
        .get("targets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|target| target.get("expr").and_then(Value::as_str))
        .collect()
}

/// The `linewatch_[a-z_]+` names in a PromQL expression, `_bucket`, `_sum` and `_count`
/// stripped (the series of a histogram are named after it).
fn metric_names(expr: &str) -> Vec<String> {
    const PREFIX: &str = "linewatch_";
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = expr[from..].find(PREFIX) {
        let start = from + found;
        let mut end = start + PREFIX.len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        from = end;
        // Part of a longer identifier (`foo_linewatch_x`): not a linewatch metric.
        let glued = start > 0 && {
            let before = bytes[start - 1];
            before.is_ascii_alphanumeric() || before == b'_' || before == b':'
        };
        if glued || end == start + PREFIX.len() {
            continue;
        }
        let name = &expr[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(base.to_string());
    }
    names
}

#[test]
fn metric_names_are_scanned_by_hand_correctly() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le, stage) \
             (rate(linewatch_transaction_duration_seconds_bucket[5m])))"
        ),
        ["linewatch_transaction_duration_seconds"]
    );
    assert_eq!(
        metric_names("sum(linewatch_tickets_at_risk) + sum(linewatch_circuits_down{stage=\"x\"})"),
        ["linewatch_tickets_at_risk", "linewatch_circuits_down"]
    );
    assert_eq!(
        metric_names("rate(linewatch_x_sum[5m]) / rate(linewatch_x_count[5m])"),
        ["linewatch_x", "linewatch_x"]
    );
    assert!(metric_names("up{job=\"linewatch\"} + other_linewatch_thing").is_empty());
}

#[test]
fn dashboard_is_the_provisioned_linewatch_dashboard() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "linewatch");
    assert_eq!(dashboard["title"], "linewatch — dedicated-line SLA");
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(schema >= 39, "schemaVersion {schema}");

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {:?} has no id", title(panel)));
        assert!(ids.insert(id), "panel id {id} used twice");
        if !is_row(panel) {
            let exprs = exprs(panel);
            assert!(
                !exprs.is_empty() && exprs.iter().all(|e| !e.trim().is_empty()),
                "panel {:?} has no query",
                title(panel)
            );
        }
    }
    let rows: Vec<&str> = panels(&dashboard)
        .into_iter()
        .filter(|p| is_row(p))
        .map(title)
        .collect();
    assert_eq!(rows, ["SLA", "Pipeline"]);
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let dashboard = dashboard();
    let known: BTreeSet<&str> = METRIC_NAMES.iter().copied().collect();
    let mut unknown = Vec::new();
    let mut used = 0;
    for panel in panels(&dashboard) {
        for expr in exprs(panel) {
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "panel {:?}: no linewatch metric in {expr:?}",
                title(panel)
            );
            for name in names {
                used += 1;
                if !known.contains(name.as_str()) {
                    unknown.push(format!("{name} (panel {:?})", title(panel)));
                }
            }
        }
    }
    assert!(used > 0, "no metric found in the dashboard");
    assert!(
        unknown.is_empty(),
        "metrics not in telemetry::METRIC_NAMES: {unknown:#?}"
    );
}

#[test]
fn dashboard_shows_every_exported_metric() {
    let dashboard = dashboard();
    let used: BTreeSet<String> = panels(&dashboard)
        .into_iter()
        .flat_map(exprs)
        .flat_map(metric_names)
        .collect();
    let missing: Vec<&str> = METRIC_NAMES
        .iter()
        .copied()
        .filter(|name| !used.contains(*name))
        .collect();
    assert!(missing.is_empty(), "metrics no panel shows: {missing:?}");
}

#[test]
fn dashboard_uses_only_the_provisioned_datasource() {
    /// Every `datasource` inside `value` (a panel: its own, its targets', nested panels').
    fn check(value: &Value, panel: &str, seen: &mut usize) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "datasource" {
                        *seen += 1;
                        assert_eq!(
                            inner.get("uid").and_then(Value::as_str),
                            Some("prometheus"),
                            "panel {panel:?}: datasource {inner} is not uid `prometheus`"
                        );
                        assert_eq!(
                            inner.get("type").and_then(Value::as_str),
                            Some("prometheus"),
                            "panel {panel:?}: datasource {inner} is not of type `prometheus`"
                        );
                    } else {
                        check(inner, panel, seen);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| check(item, panel, seen)),
            _ => {}
        }
    }
    let dashboard = dashboard();
    let mut seen = 0;
    for panel in panels(&dashboard) {
        let mut own = 0;
        check(panel, title(panel), &mut own);
        if !is_row(panel) {
            assert!(own > 0, "panel {:?} names no datasource", title(panel));
        }
        seen += own;
    }
    assert!(seen > 0);
}

#[test]
fn prometheus_scrapes_linewatch_metrics() {
    let config = read(PROMETHEUS);
    for needle in ["linewatch:9464", "/metrics", "scrape_interval: 15s"] {
        assert!(config.contains(needle), "{PROMETHEUS} lacks {needle:?}");
    }
    // /metrics is open: no credentials in the scrape config.
    for needle in ["authorization", "bearer_token", "LINEWATCH_HTTP_TOKEN"] {
        assert!(!config.contains(needle), "{PROMETHEUS} has {needle:?}");
    }
}

/// The entries of every `ports:` list of a compose file (short syntax, block or flow style),
/// with their line numbers, quotes removed. Lines of the long syntax come out as they are.
fn published_ports(compose: &str) -> Vec<(usize, String)> {
    fn unquote(item: &str) -> String {
        item.trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string()
    }
    let mut out = Vec::new();
    let mut ports_indent: Option<usize> = None;
    for (index, line) in compose.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(key_indent) = ports_indent {
            if indent > key_indent || (indent == key_indent && trimmed.starts_with('-')) {
                let item = trimmed.strip_prefix('-').unwrap_or(trimmed);
                out.push((number, unquote(item)));
                continue;
            }
            ports_indent = None;
        }
        if let Some(rest) = trimmed.strip_prefix("ports:") {
            let rest = rest.trim();
            if rest.is_empty() {
                ports_indent = Some(indent);
            } else if let Some(list) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                out.extend(
                    list.split(',')
                        .filter(|item| !item.trim().is_empty())
                        .map(|item| (number, unquote(item))),
                );
            } else {
                out.push((number, rest.to_string()));
            }
        }
    }
    out
}

/// `127.0.0.1:<host>:<container>` (optionally `/tcp` or `/udp`): the container port.
fn loopback_container_port(entry: &str) -> Option<&str> {
    let address = entry.split('/').next().unwrap_or(entry);
    match address.split(':').collect::<Vec<_>>().as_slice() {
        ["127.0.0.1", host, container] if !host.is_empty() && !container.is_empty() => {
            Some(container)
        }
        _ => None,
    }
}

#[test]
fn published_ports_are_scanned_by_hand_correctly() {
    let compose = [
        "services:",
        "  a:",
        "    ports:",
        "      - \"127.0.0.1:1:1\"",
        "      # a comment",
        "      - 2:2",
        "    image: x",
        "  b:",
        "    ports: [\"3\", '127.0.0.1:4:4/udp']",
        "  c:",
        "    ports:",
        "    - target: 5",
        "      host_ip: 127.0.0.1",
        "    restart: always",
    ]
    .join("\n");
    let entries: Vec<String> = published_ports(&compose)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        entries,
        [
            "127.0.0.1:1:1",
            "2:2",
            "3",
            "127.0.0.1:4:4/udp",
            "target: 5",
            "host_ip: 127.0.0.1"
        ]
    );
    let ok: Vec<Option<&str>> = entries.iter().map(|e| loopback_container_port(e)).collect();
    assert_eq!(ok, [Some("1"), None, None, Some("4"), None, None]);
}

#[test]
fn compose_publishes_ports_on_loopback_only() {
    let compose = read(COMPOSE);
    let entries = published_ports(&compose);
    let mut containers = BTreeSet::new();
    for (line, entry) in &entries {
        let port = loopback_container_port(entry).unwrap_or_else(|| {
            panic!(
                "{COMPOSE}:{line}: port {entry:?} is not published as \
                 \"127.0.0.1:<host port>:<container port>\""
            )
        });
        containers.insert(port.to_string());
    }
    for port in ["9092", "9464", "9090", "3000"] {
        assert!(
            containers.contains(port),
            "{COMPOSE}: port {port} is not published (found {containers:?})"
        );
    }
}

#[test]
fn compose_requires_the_secrets() {
    let compose = read(COMPOSE);
    for needle in [
        // linewatch listens on 0.0.0.0 in its container: its API needs a token.
        r#""--http-listen", "0.0.0.0:9464""#,
        "LINEWATCH_HTTP_TOKEN: ${LINEWATCH_HTTP_TOKEN:?",
        "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?",
        r#"GF_AUTH_ANONYMOUS_ENABLED: "false""#,
    ] {
        assert!(compose.contains(needle), "{COMPOSE} lacks {needle:?}");
    }
}
