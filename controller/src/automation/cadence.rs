//! A schedule's cadence: a 5-field cron expression (minute first) or a 6-field one (seconds
//! first), read in an IANA time zone, and the slots it names as ms since the epoch.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed cron expression and its time zone.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: Cron,
    zone: Tz,
}

impl Cadence {
    /// Parses `expr` read in `timezone` (`UTC` when `None`); the error names what is wrong.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(format!(
                "cron expression {expr:?} has {fields} field(s); give 5 (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\") or 6 with seconds first (e.g. \"*/2 * * * * *\")"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("cron expression {expr:?} is invalid: {e}"))?;
        let zone = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                format!("unknown time zone {name:?}; give an IANA name such as UTC, Europe/Paris or America/New_York")
            })?,
        };
        Ok(Self { cron, zone })
    }

    /// The time zone's name, as stored and shown.
    pub fn zone_name(&self) -> &'static str {
        self.zone.name()
    }

    /// The latest slot at or before `now_ms`, if any.
    pub fn latest_at_or_before(&self, now_ms: u64) -> Option<u64> {
        let now = self.at(now_ms - now_ms % 1000)?;
        let slot = self.cron.find_previous_occurrence(&now, true).ok()?;
        u64::try_from(slot.timestamp_millis()).ok()
    }

    /// The first slot strictly after `after_ms`, if any.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = self.at(after_ms - after_ms % 1000)?;
        let slot = self.cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(slot.timestamp_millis()).ok()
    }

    fn at(&self, ms: u64) -> Option<DateTime<Tz>> {
        let utc: DateTime<Utc> = DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)?;
        Some(self.zone.from_utc_datetime(&utc.naive_utc()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05 (a Monday) 10:00:00 UTC.
    const MONDAY_10H: u64 = 1_767_607_200_000;

    #[test]
    fn five_and_six_fields_are_taken_and_others_refused_by_name() {
        let every_two = Cadence::parse("*/2 * * * * *", None).unwrap();
        assert_eq!(
            every_two.latest_at_or_before(MONDAY_10H + 3_500),
            Some(MONDAY_10H + 2_000)
        );
        assert_eq!(
            every_two.next_after(MONDAY_10H + 2_000),
            Some(MONDAY_10H + 4_000)
        );
        let hourly = Cadence::parse("30 * * * *", None).unwrap();
        assert_eq!(
            hourly.next_after(MONDAY_10H),
            Some(MONDAY_10H + 30 * 60_000)
        );
        assert_eq!(
            hourly.latest_at_or_before(MONDAY_10H),
            Some(MONDAY_10H - 30 * 60_000)
        );
        for bad in ["* * * *", "0 0 * * * * 2030", "61 * * * *", ""] {
            let err = Cadence::parse(bad, None).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn fields_are_read_in_the_time_zone() {
        // 02:00 in Paris is 01:00 UTC in winter.
        let paris = Cadence::parse("0 2 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.zone_name(), "Europe/Paris");
        assert_eq!(
            paris.next_after(MONDAY_10H),
            Some(MONDAY_10H + 15 * 3_600_000)
        );
        let err = Cadence::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
