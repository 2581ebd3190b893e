//! Text output helpers: aligned tables and human durations.

/// Prints rows as left-aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// `1.2s`, `3m04s`, `-` when unknown.
pub fn duration_ms(start: Option<u64>, end: Option<u64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => human_ms(e.saturating_sub(s)),
        (Some(s), None) => human_ms(drover_protocol::message::now_ms().saturating_sub(s)),
        _ => "-".to_string(),
    }
}

pub fn human_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// A local time-of-day-free timestamp: seconds ago.
pub fn ago(ms: Option<u64>) -> String {
    match ms {
        Some(t) => format!(
            "{} ago",
            human_ms(drover_protocol::message::now_ms().saturating_sub(t))
        ),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_well() {
        assert_eq!(super::human_ms(1234), "1.2s");
        assert_eq!(super::human_ms(184_000), "3m04s");
        assert_eq!(super::duration_ms(None, None), "-");
    }
}
