//! `tokenkeeper demo`: runs by itself in a sandbox and reports no loss.

use crate::util::*;

#[test]
fn the_demo_runs_its_story_in_a_sandbox_and_touches_nothing_else() {
    let s = Sandbox::new();
    let home_before: Vec<_> = files_under(&s.home());
    let run = s.run(&["demo", "--seconds", "24"]);
    assert_eq!(run.code, 0, "{run:?}");
    for line in [
        "daemon refreshed the token",
        "outage",
        "login_dead",
        "recovered",
        "reused refresh tokens 0; logins revoked for reuse 0",
        "tokens in any output  0",
    ] {
        assert!(run.stdout.contains(line), "missing {line:?}: {run:?}");
    }
    assert_eq!(
        files_under(&s.home()),
        home_before,
        "the demo wrote into HOME"
    );
    assert!(
        !s.state_dir().exists(),
        "the demo wrote into the state folder"
    );
    assert_eq!(
        s.server.stats().token_requests,
        0,
        "the demo used its own stand-in"
    );
}
