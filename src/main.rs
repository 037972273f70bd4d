//! The `tokenkeeper` binary: parses the command line, runs one command, turns its result into
//! output and an exit code. The work itself lives in the library (`tokenkeeper::cli`).

fn main() -> std::process::ExitCode {
    tokenkeeper::cli::run()
}
