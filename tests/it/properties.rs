//! Placeholder: property tests (issue 5) land here.
