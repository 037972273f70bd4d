//! The `tokenkeeper` binary: parses the command line, runs one command, turns its result into
//! output and an exit code. The work itself lives in the library (`tokenkeeper::cli`).

/// Short-lived commands allocate from a small arena first (see `cli::arena`).
#[global_allocator]
static ALLOCATOR: tokenkeeper::cli::arena::Arena = tokenkeeper::cli::arena::Arena::new();

fn main() -> std::process::ExitCode {
    tokenkeeper::cli::run()
}
