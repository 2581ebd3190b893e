//! The log-line parsing and the held chain of benchmark 13.

use super::*;

#[test]
fn log_lines_give_their_time_and_replay() {
    let line = "\u{1b}[2m2026-12-03T02:14:00.123456Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m state journal b.journal: loaded the snapshot of batch 7, replayed 12 journal record(s) in 3.50ms, applied 2 batch(es), now at batch 9, leading as epoch 2";
    let ms = line_time(line).expect("a time");
    assert_eq!(ms, 1_796_264_040_123.456);
    let r = replay(line).expect("a replay");
    assert_eq!(r.records, 12.0);
    assert_eq!(r.ms, 3.5);
    assert!(r.snapshot);
    let r = replay("x replayed 2004 journal record(s) in 1.02s, applied 2000 batch(es)")
        .expect("a replay");
    assert_eq!((r.records, r.ms, r.snapshot), (2004.0, 1020.0, false));
    assert!(replay("no such line").is_err());
    assert!(line_time("INFO no time").is_err());
}

#[test]
fn durations_in_every_unit() {
    assert_eq!(duration_ms("1.5s").expect("s"), 1500.0);
    assert_eq!(duration_ms("45.60ms").expect("ms"), 45.6);
    assert!((duration_ms("7.89µs").expect("µs") - 0.00789).abs() < 1e-12);
    assert!(duration_ms("3h").is_err());
}

#[test]
fn phases_stay_within_the_period() {
    for _ in 0..100 {
        assert!(random_phase(Duration::from_secs(1)) < Duration::from_secs(1));
    }
}

#[test]
fn the_held_step_waits_for_its_file() {
    let toml = chain(Path::new("/tmp/x/takeover.go"));
    assert!(
        toml.contains("while [ ! -e '/tmp/x/takeover.go' ]"),
        "{toml}"
    );
    assert!(toml.contains("touch '/tmp/x/takeover.held'"), "{toml}");
    drover_protocol::spec::PipelineSpec::from_toml(&toml).expect("a valid pipeline");
}
