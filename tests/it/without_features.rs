//! A build without a default feature (`cargo test --no-default-features`): fleet mode and the
//! demo each say in one line that this build lacks them, and a fleet machine's `[store]` is
//! refused, never ignored. The default build tests the features themselves (`fleet.rs`,
//! `demo.rs`).

use crate::util::*;

#[cfg(not(feature = "fleet"))]
#[test]
fn without_fleet_mode_the_fleet_command_the_store_and_a_store_table_are_refused() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let before = s.read_creds();
    assert_eq!(s.run(&["status"]).code, 0, "a plain status works");

    for run in [
        s.run(&["fleet", "keygen"]),
        s.run(&["fleet", "push", "--force"]),
        s.run(&["--store", "postgres://db/x", "refresh", "--force"]),
        Run::from(
            s.cmd(&["exec", "--", "true"])
                .env("TOKENKEEPER_STORE", "postgres://db/x")
                .output()
                .expect("run tokenkeeper"),
        ),
    ] {
        assert_eq!(run.code, 2, "{run:?}");
        assert!(
            run.stderr.contains("no fleet mode") && run.stderr.trim().lines().count() == 1,
            "{run:?}"
        );
    }

    s.config("[store]\nurl = \"postgres://db/x\"\nkey_file = \"fleet.key\"\n");
    for args in [&["status"][..], &["refresh", "--force"], &["token"]] {
        let run = s.run(args);
        assert_eq!(run.code, 78, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("[store]")
                && run.stderr.contains("fleet")
                && run.stderr.contains("config.toml")
                && run.stderr.trim().lines().count() == 1,
            "{args:?}: {run:?}"
        );
    }
    assert_eq!(s.read_creds(), before, "nothing was refreshed");
    assert_eq!(s.server.stats().token_requests, 0);
}

#[cfg(not(feature = "demo"))]
#[test]
fn without_the_demo_feature_demo_says_how_to_build_it() {
    let s = Sandbox::new();
    let run = s.run(&["demo"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--features demo") && run.stderr.trim().lines().count() == 1,
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}
