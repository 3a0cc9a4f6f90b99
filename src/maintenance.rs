//! Planned works: maintenance windows announced to customers ahead of time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A maintenance window. Time inside it is excluded from SLA clocks and outage totals only
/// when its notice met the policy's lead time (checked by the engine, not here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub window_id: String,
    /// Network objects worked on (same naming as the inventory).
    #[serde(default)]
    pub objects: Vec<String>,
    /// Circuits named directly.
    #[serde(default)]
    pub circuits: Vec<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// When the customers were notified.
    pub notice_given_at: DateTime<Utc>,
    /// Emergency work for a major safety hazard (shorter notice applies).
    #[serde(default)]
    pub emergency: bool,
    /// Cross-border circuits (longer notice applies).
    #[serde(default)]
    pub cross_border: bool,
}
