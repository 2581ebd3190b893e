//! The layout version of durable data, kept in the data itself, and what happens at open: an
//! empty store is stamped, a current one is used, an older one is migrated step by step, a newer
//! one is refused with what to run instead.
//!
//! Written for any durable log the controller keeps: each implements [`Versioned`] over its own
//! storage and calls [`open_versioned`] with its own current version.

/// The stamp a store carries: its layout version and the release that wrote that layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub version: u32,
    /// The `drover` release that stamped the store (e.g. `0.1.0`).
    pub written_by: String,
}

impl Stamp {
    /// The stamp this binary writes for layout `version`.
    pub fn current(version: u32) -> Self {
        Self {
            version,
            written_by: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Why a store cannot be used by this binary.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the {what} at {path} has layout version {found} (written by drover {written_by}), but this drover ({ours}) reads layout versions up to {known}: run drover {written_by} or newer on it, or move {path} aside to start with an empty store"
    )]
    Newer {
        what: &'static str,
        path: String,
        found: u32,
        written_by: String,
        known: u32,
        ours: &'static str,
    },
    #[error(
        "the {what} at {path} holds an unreadable layout version ({detail}); move {path} aside to start with an empty store"
    )]
    Unreadable {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error(
        "the {what} at {path} has layout version {found}, which this drover ({ours}) cannot migrate: run the drover release that wrote it, or move {path} aside to start with an empty store"
    )]
    NoMigration {
        what: &'static str,
        path: String,
        found: String,
        ours: &'static str,
    },
}

/// Durable data whose layout version lives inside it.
pub trait Versioned {
    type Error: From<SchemaError>;

    /// What the data is, for messages: "state store", "journal".
    fn what(&self) -> &'static str;
    /// Where it lives, for messages: the directory to move aside.
    fn path(&self) -> String;
    /// The stamp, or `None` when the data predates versions (or is empty).
    fn stamp(&self) -> Result<Option<Stamp>, Self::Error>;
    /// Whether anything but the stamp is stored.
    fn has_data(&self) -> Result<bool, Self::Error>;
    /// Rewrites data of layout `from` (`None`: unversioned) into the next layout and returns its
    /// version; the caller stamps it. Fails with [`SchemaError::NoMigration`] for a layout this
    /// binary has no migration from, and with an error naming the record that does not decode.
    fn migrate(&self, from: Option<u32>) -> Result<u32, Self::Error>;
    /// Writes `stamp` durably.
    fn write_stamp(&self, stamp: &Stamp) -> Result<(), Self::Error>;
}

/// What [`open_versioned`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Nothing was stored: stamped with the current version.
    Fresh,
    /// Already at the current version.
    Current,
    /// Migrated from `from` (`None`: unversioned) to the current version.
    Migrated { from: Option<u32> },
}

/// Checks `data`'s layout against `current` and brings it there, or refuses it.
pub fn open_versioned<V: Versioned>(data: &V, current: u32) -> Result<Opened, V::Error> {
    let stamp = data.stamp()?;
    match stamp {
        Some(s) if s.version == current => return Ok(Opened::Current),
        Some(s) if s.version > current => {
            return Err(SchemaError::Newer {
                what: data.what(),
                path: data.path(),
                found: s.version,
                written_by: s.written_by,
                known: current,
                ours: env!("CARGO_PKG_VERSION"),
            }
            .into());
        }
        None if !data.has_data()? => {
            data.write_stamp(&Stamp::current(current))?;
            return Ok(Opened::Fresh);
        }
        _ => {}
    }
    let from = stamp.map(|s| s.version);
    let mut at = from;
    while at != Some(current) {
        let next = data.migrate(at)?;
        if at.is_some_and(|a| next <= a) || next > current {
            return Err(SchemaError::NoMigration {
                what: data.what(),
                path: data.path(),
                found: at.map_or("none".to_string(), |a| a.to_string()),
                ours: env!("CARGO_PKG_VERSION"),
            }
            .into());
        }
        data.write_stamp(&Stamp::current(next))?;
        at = Some(next);
    }
    Ok(Opened::Migrated { from })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory store whose migrations are numbered `from -> from + 1`, except from
    /// unversioned data, which is layout 1.
    struct Fake {
        stamp: RefCell<Option<Stamp>>,
        data: bool,
        migrations: RefCell<Vec<Option<u32>>>,
        migrates_to: fn(Option<u32>) -> u32,
    }

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct FakeError(#[from] SchemaError);

    impl Versioned for Fake {
        type Error = FakeError;
        fn what(&self) -> &'static str {
            "journal"
        }
        fn path(&self) -> String {
            "/data/journal".into()
        }
        fn stamp(&self) -> Result<Option<Stamp>, FakeError> {
            Ok(self.stamp.borrow().clone())
        }
        fn has_data(&self) -> Result<bool, FakeError> {
            Ok(self.data)
        }
        fn migrate(&self, from: Option<u32>) -> Result<u32, FakeError> {
            self.migrations.borrow_mut().push(from);
            Ok((self.migrates_to)(from))
        }
        fn write_stamp(&self, stamp: &Stamp) -> Result<(), FakeError> {
            *self.stamp.borrow_mut() = Some(stamp.clone());
            Ok(())
        }
    }

    fn fake(version: Option<u32>, data: bool) -> Fake {
        Fake {
            stamp: RefCell::new(version.map(|version| Stamp {
                version,
                written_by: "9.9.9".into(),
            })),
            data,
            migrations: RefCell::new(Vec::new()),
            migrates_to: |from| from.map_or(1, |f| f + 1),
        }
    }

    #[test]
    fn empty_data_is_stamped_and_current_data_left_alone() {
        let empty = fake(None, false);
        assert_eq!(open_versioned(&empty, 3).unwrap(), Opened::Fresh);
        assert_eq!(empty.stamp.borrow().as_ref().unwrap().version, 3);
        assert!(empty.migrations.borrow().is_empty());

        let current = fake(Some(3), true);
        assert_eq!(open_versioned(&current, 3).unwrap(), Opened::Current);
        assert!(current.migrations.borrow().is_empty());
        assert_eq!(current.stamp.borrow().as_ref().unwrap().written_by, "9.9.9");
    }

    #[test]
    fn older_data_is_migrated_one_layout_at_a_time() {
        let unversioned = fake(None, true);
        let opened = open_versioned(&unversioned, 3).unwrap();
        assert_eq!(opened, Opened::Migrated { from: None });
        assert_eq!(*unversioned.migrations.borrow(), [None, Some(1), Some(2)]);
        assert_eq!(
            *unversioned.stamp.borrow(),
            Some(Stamp::current(3)),
            "stamped by this binary"
        );

        let two = fake(Some(2), true);
        assert_eq!(
            open_versioned(&two, 3).unwrap(),
            Opened::Migrated { from: Some(2) }
        );
        assert_eq!(*two.migrations.borrow(), [Some(2)]);
    }

    #[test]
    fn newer_data_is_refused_with_the_release_that_wrote_it() {
        let newer = fake(Some(4), true);
        let err = open_versioned(&newer, 3).unwrap_err().to_string();
        assert!(err.contains("journal at /data/journal"), "{err}");
        assert!(err.contains("layout version 4"), "{err}");
        assert!(err.contains("run drover 9.9.9 or newer"), "{err}");
        assert!(err.contains("move /data/journal aside"), "{err}");
        assert!(newer.migrations.borrow().is_empty());
    }

    #[test]
    fn a_migration_that_goes_nowhere_is_refused_not_looped() {
        let mut stuck = fake(Some(1), true);
        stuck.migrates_to = |from| from.unwrap_or(0);
        let err = open_versioned(&stuck, 3).unwrap_err().to_string();
        assert!(err.contains("layout version 1, which this drover"), "{err}");
        assert_eq!(stuck.stamp.borrow().as_ref().unwrap().version, 1);
    }
}
