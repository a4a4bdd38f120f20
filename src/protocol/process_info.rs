//! Circus's process info object (`stats`, `dstats`, the stats stream) and its odd formats.

use serde::{Deserialize, Serialize};

/// One process as Circus describes it. Field names and formats are Circus's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Resident memory, human ("1.46M").
    pub mem_info1: String,
    /// Virtual memory, human.
    pub mem_info2: String,
    /// CPU percent over the last sampling interval.
    pub cpu: f64,
    /// Resident memory as a percent of the machine's, 3 decimals.
    pub mem: f64,
    /// Total CPU time "M:SS.cc".
    pub ctime: String,
    pub username: String,
    pub nice: i64,
    pub create_time: f64,
    pub age: f64,
    /// Base name of argv[0].
    pub cmdline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<ProcessInfo>>,
    /// When the supervisor spawned it (watcher processes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<f64>,
    /// Worker id (watcher processes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wid: Option<u32>,
}

/// psutil's `bytes2human`: "512B", "1.46M", "31.10M", "2.00G".
pub fn format_mem(bytes: u64) -> String {
    const SYMBOLS: [char; 8] = ['K', 'M', 'G', 'T', 'P', 'E', 'Z', 'Y'];
    for (i, symbol) in SYMBOLS.iter().enumerate().rev() {
        let unit = 1u128 << ((i + 1) * 10);
        if u128::from(bytes) >= unit {
            return format!("{:.2}{}", bytes as f64 / unit as f64, symbol);
        }
    }
    format!("{bytes}B")
}

/// Circus's `ctime`: CPU seconds as "M:SS.cc" (minutes unbounded).
pub fn format_cpu_time(seconds: f64) -> String {
    let centis = (seconds.max(0.0) * 100.0).round() as u64;
    let minutes = centis / 6000;
    let secs = (centis % 6000) / 100;
    let cents = centis % 100;
    format!("{minutes}:{secs:02}.{cents:02}")
}

/// Memory percent rounded to 3 decimals, as Circus reports it.
pub fn round_mem_percent(percent: f64) -> f64 {
    (percent * 1000.0).round() / 1000.0
}
