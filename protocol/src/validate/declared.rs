//! The steps of a pipeline by name, as the checks of references look them up.

use super::Step;
use crate::spec::StepSpec;
use std::hash::{BuildHasher, RandomState};

/// One declared step: as submitted, or already validated (a running pipeline's).
#[derive(Clone, Copy)]
pub(super) enum Declaration<'a> {
    Spec(&'a StepSpec),
    Step(&'a Step),
}

impl<'a> Declaration<'a> {
    fn name(self) -> &'a str {
        match self {
            Declaration::Spec(s) => &s.name,
            Declaration::Step(s) => s.name.as_str(),
        }
    }

    /// Whether the step declares output `name`.
    pub(super) fn has_output(self, name: &str) -> bool {
        match self {
            Declaration::Spec(s) => match &s.function {
                Some(f) => f.returns.iter().any(|r| r == name),
                None => s.outputs.contains_key(name),
            },
            Declaration::Step(s) => s.outputs.keys().any(|o| o.as_str() == name),
        }
    }

    /// The names of the step's outputs, for an error that lists them.
    pub(super) fn output_names(self) -> Vec<String> {
        match self {
            Declaration::Spec(s) => match &s.function {
                Some(f) => f.returns.clone(),
                None => s.outputs.keys().cloned().collect(),
            },
            Declaration::Step(s) => s.outputs.keys().map(|o| o.to_string()).collect(),
        }
    }
}

/// Every step of a pipeline by name. The table holds positions only and confirms a hit by the
/// name at that position: 4 bytes a step, so a 100k-step pipeline's table stays in the CPU's
/// cache while its steps are checked (a table of names and outputs took 48 bytes a step).
pub(super) struct Declared<'a> {
    steps: Vec<Declaration<'a>>,
    table: hashbrown::HashTable<u32>,
    hasher: RandomState,
}

impl<'a> Declared<'a> {
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            steps: Vec::with_capacity(n),
            table: hashbrown::HashTable::with_capacity(n),
            hasher: RandomState::new(),
        }
    }

    /// Adds the next step; `false` (and nothing added to the table) when its name is taken.
    pub(super) fn push(&mut self, step: Declaration<'a>) -> bool {
        let Self {
            steps,
            table,
            hasher,
        } = self;
        let name = step.name();
        let hash = hasher.hash_one(name);
        let position = steps.len() as u32;
        steps.push(step);
        let taken = |&p: &u32| steps[p as usize].name() == name;
        if table.find(hash, taken).is_some() {
            return false;
        }
        let rehash = |&p: &u32| hasher.hash_one(steps[p as usize].name());
        table.insert_unique(hash, position, rehash);
        true
    }

    /// The position and declaration of the step named `name`.
    pub(super) fn get(&self, name: &str) -> Option<(usize, Declaration<'a>)> {
        let hash = self.hasher.hash_one(name);
        let found = self
            .table
            .find(hash, |&p| self.steps[p as usize].name() == name)?;
        let position = *found as usize;
        Some((position, self.steps[position]))
    }
}
