//! Bytes fed in chunks to `auth_failure::Detector`. The first byte sets the chunk size (1–256);
//! the rest is the stream. However the stream is cut, the detector must report what a plain
//! line-by-line reading reports, and its explanation must stay one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenkeeper::exec::auth_failure::{Detector, LoginFacts, detect_line, explain};

fuzz_target!(|data: &[u8]| {
    let [size, stream @ ..] = data else {
        return;
    };
    let mut chunked = Detector::default();
    for chunk in stream.chunks(usize::from(*size) + 1) {
        chunked.feed(chunk);
    }
    chunked.finish();

    let mut whole = Detector::default();
    whole.feed(stream);
    whole.finish();

    let reference = stream
        .split(|&b| b == b'\n')
        .filter_map(|line| detect_line(&String::from_utf8_lossy(line)))
        .next_back();
    assert_eq!(chunked.found(), reference.as_ref());
    assert_eq!(whole.found(), reference.as_ref());

    if let Some(f) = chunked.found() {
        for (expires_at, refreshed_at) in [
            (Some("22:02".to_string()), Some("14:02".to_string())),
            (Some("22:02".to_string()), None),
            (None, None),
        ] {
            let facts = LoginFacts {
                path: "/h/.claude/.credentials.json",
                expires_at,
                refreshed_at,
                relogin: "`claude /login`",
            };
            let line = explain("claude", f, &facts);
            assert!(
                !line.chars().any(char::is_control),
                "explain() printed a control character: {line:?}"
            );
        }
    }
});
