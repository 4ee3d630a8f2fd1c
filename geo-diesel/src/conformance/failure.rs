//! What a failed conformance scenario reports: the test, the type, the record, what was
//! expected and what was found, and a hint at the usual cause.

use std::fmt;

use geo_core::ReplicableDescriptor;

/// A conformance scenario that did not hold.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The scenario (the generated test's name).
    pub scenario: &'static str,
    /// The replicable (its type, name, event capture and verification mode are shown).
    pub replicable: &'static ReplicableDescriptor,
    /// The record concerned (`<name> <id>, file <path>`), when there is one.
    pub record: Option<String>,
    /// What the scenario expected.
    pub expected: String,
    /// What it found.
    pub found: String,
    /// The usual cause, when the kit knows one.
    pub hint: Option<String>,
}

impl Failure {
    /// A failure of `scenario` for type `d`: `expected`, but `found`.
    pub fn new(
        scenario: &'static str,
        d: &'static ReplicableDescriptor,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Failure {
            scenario,
            replicable: d,
            record: None,
            expected: expected.into(),
            found: found.into(),
            hint: None,
        }
    }

    /// Names the record concerned.
    #[must_use]
    pub fn record(mut self, record: impl Into<String>) -> Self {
        self.record = Some(record.into());
        self
    }

    /// Adds the usual cause.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.replicable;
        writeln!(
            f,
            "conformance test `{}` failed for {} (`{}`: events = \"{}\", verification = \"{}\")",
            self.scenario, d.type_name, d.name, d.events, d.verification
        )?;
        if let Some(r) = &self.record {
            writeln!(f, "  record:   {r}")?;
        }
        writeln!(f, "  expected: {}", self.expected)?;
        write!(f, "  found:    {}", self.found)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint:     {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}
