//! Runs the controller submits by itself: schedules (a cron cadence) and triggers (another
//! run ended). Records and decisions only: the owning task ([`crate::service`]) stores them,
//! asks [`schedules::due`] on its tick and submits what fires.

pub mod cadence;
pub mod schedules;
pub mod triggers;

/// Checks a schedule's or trigger's name: 1 to 64 of letters, digits, `-`, `_` and `.`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name {name:?} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}
