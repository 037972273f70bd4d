//! Placeholder: the fault matrix (issue 5) lands here.
