//! The results: one row per figure, rendered as a Markdown table and as JSON, with the machine.

use crate::stats;
use serde::Serialize;
use std::process::Command;

/// What a figure is compared with, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    /// What was measured, e.g. "AMQP round trip p50".
    pub what: String,
    pub value: f64,
    pub unit: String,
}

/// One figure: its samples (one per repetition) and how it compares.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Benchmark number and name, e.g. "2 hop".
    pub bench: String,
    pub figure: String,
    pub unit: String,
    pub samples: Vec<f64>,
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub limit: Option<Limit>,
    /// `median / limit` (for times: how many times slower; for rates: the fraction reached).
    pub ratio: Option<f64>,
    pub goal: String,
    /// `None` when the figure has no goal of its own.
    pub met: Option<bool>,
    /// How it was measured or why it is missing.
    pub note: Option<String>,
}

impl Row {
    pub fn new(bench: &str, figure: &str, unit: &str, samples: Vec<f64>) -> Self {
        Self {
            bench: bench.to_string(),
            figure: figure.to_string(),
            unit: unit.to_string(),
            min: stats::min(&samples),
            median: stats::median(&samples),
            max: stats::max(&samples),
            samples,
            limit: None,
            ratio: None,
            goal: "-".to_string(),
            met: None,
            note: None,
        }
    }

    /// Compares the median with `limit`; the ratio is `median / limit`.
    pub fn limit(mut self, what: &str, value: f64, unit: &str) -> Self {
        self.ratio = Some(self.median / value);
        self.limit = Some(Limit {
            what: what.to_string(),
            value,
            unit: unit.to_string(),
        });
        self
    }

    /// The goal as text and whether the median meets it.
    pub fn goal(mut self, text: &str, met: bool) -> Self {
        self.goal = text.to_string();
        self.met = Some(met && !self.median.is_nan());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// A figure formatted with a precision that suits its size.
pub fn fmt(value: f64, unit: &str) -> String {
    if value.is_nan() {
        return "n/a".to_string();
    }
    let abs = value.abs();
    let digits = if abs >= 100.0 {
        0
    } else if abs >= 10.0 {
        1
    } else if abs >= 1.0 {
        2
    } else {
        3
    };
    format!("{value:.digits$} {unit}")
}

/// The machine and software the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub rabbitmq: String,
    pub python: String,
    pub drover_commit: String,
    pub build_profile: String,
    /// `/proc/loadavg` when the report is written: other work on the machine skews the figures.
    pub load_average: String,
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

impl Machine {
    pub fn probe(python: &str, build_profile: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        let unknown = || "unknown".to_string();
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| unknown()),
            rustc: command_line("rustc", &["--version"]).unwrap_or_else(unknown),
            rabbitmq: command_line("rabbitmq-diagnostics", &["-q", "server_version"])
                .or_else(|| command_line("rabbitmqctl", &["version"]))
                .unwrap_or_else(unknown),
            python: command_line(python, &["--version"]).unwrap_or_else(unknown),
            drover_commit: command_line("git", &["rev-parse", "--short", "HEAD"])
                .unwrap_or_else(unknown),
            build_profile: build_profile.to_string(),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|_| unknown()),
        }
    }
}

/// Everything one `bench/run` produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub started_at: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "# drover benchmarks ({} mode)\n\n\
             {} cores ({}), {} GiB RAM, Linux {}, {}, RabbitMQ {}, {}, drover {} ({} build); \
             started {}, took {:.0} s; load average at the end {} (1/5/15 min).\n\n",
            self.mode,
            m.cores,
            m.cpu,
            m.memory_gib,
            m.kernel,
            m.rustc,
            m.rabbitmq,
            m.python,
            m.drover_commit,
            m.build_profile,
            self.started_at,
            self.duration_s,
            m.load_average
        );
        out.push_str(
            "| # | figure | n | min | median | max | limit (same run) | ratio | goal | met |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let limit = r.limit.as_ref().map_or("-".to_string(), |l| {
                format!("{}: {}", l.what, fmt(l.value, &l.unit))
            });
            let ratio = r.ratio.map_or("-".to_string(), |x| format!("{x:.2}×"));
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.bench,
                r.figure,
                r.samples.len(),
                fmt(r.min, &r.unit),
                fmt(r.median, &r.unit),
                fmt(r.max, &r.unit),
                limit,
                ratio,
                r.goal,
                met
            ));
        }
        let notes: Vec<&Row> = self.rows.iter().filter(|r| r.note.is_some()).collect();
        if !notes.is_empty() {
            out.push_str("\nNotes:\n\n");
            for r in notes {
                out.push_str(&format!(
                    "- {} {}: {}\n",
                    r.bench,
                    r.figure,
                    r.note.as_deref().unwrap_or_default()
                ));
            }
        }
        out
    }
}

/// The current time in UTC, as `date -u` prints it (ISO 8601), or "unknown".
pub fn now_utc() -> String {
    command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(|| "unknown".into())
}
