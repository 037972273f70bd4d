//! Property tests (issue 5), calling the library directly:
//!
//! - a refresh written into any JSON document that holds a Claude login changes only the token
//!   fields: every other byte of the compact text stays as it was;
//! - expiry, schedule, backoff and duration arithmetic never overflows or panics, however
//!   extreme the times, durations and random numbers;
//! - `duration::parse` reads back what `duration::human` prints.
//!
//! Case counts are modest so the whole file runs in a few seconds; raise them for a longer hunt
//! with `PROPTEST_CASES=10000 cargo test --test it properties`.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Number, Value};
use std::time::Duration;
use tokenkeeper::daemon::schedule;
use tokenkeeper::duration;
use tokenkeeper::login::{Freshness, Login, duration_ms};
use tokenkeeper::oauth::backoff::{Next, RetryPolicy};
use tokenkeeper::oauth::endpoint::TokenResponse;
use tokenkeeper::provider::{Provider, claude};
use tokenkeeper::secret::Secret;
use tokenkeeper::storage::credentials_file::{CredentialsFile, WriteGuard};

/// No `proptest-regressions/` files in the tree: a failure prints its minimal case instead.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// (a) A refresh changes only the token fields.

/// Characters that stress escaping: quotes, backslashes, controls, non-BMP, separators.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => proptest::char::range('a', 'z'),
        1 => prop_oneof![
            Just('"'),
            Just('\\'),
            Just('/'),
            Just('\0'),
            Just('\n'),
            Just('\t'),
            Just('\u{1b}'),
            Just('\u{7f}'),
            Just('\u{2028}'),
            Just('é'),
            Just('日'),
            Just('🔑'),
            Just(' '),
        ],
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(tricky_char(), 0..max).prop_map(String::from_iter)
}

/// JSON number spellings, kept as written (`arbitrary_precision`): integers of any size, floats,
/// exponents, negative zero.
fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::to_string(&f).unwrap()),
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?",
        Just("-0".to_string()),
        Just("1.50".to_string()),
        Just("123456789012345678901234567890".to_string()),
    ]
    .prop_map(|s| serde_json::from_str::<Number>(&s).expect("a JSON number"))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((text(8), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// Keys and values in the order they are written, keys unique.
type Entries = Vec<(String, Value)>;

fn unique(entries: Entries, reserved: &[&str]) -> Entries {
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()) && seen.insert(k.clone()))
        .collect()
}

const TOKEN_FIELDS: [&str; 5] = [
    "accessToken",
    "refreshToken",
    "expiresAt",
    "scopes",
    "refreshTokenExpiresAt",
];

/// A token string, or null, or absent.
fn token_field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        text(24).prop_map(|s| Some(Value::String(s))),
    ]
}

/// An expiry as Claude writes it, or in any other number spelling, or null, or absent.
fn expiry_field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<i64>().prop_map(|n| Some(Value::from(n))),
        (0i64..4_000_000_000_000).prop_map(|n| Some(Value::from(n))),
        number()
            .prop_filter("representable", |n| n
                .as_f64()
                .is_some_and(|f| f.abs() < 9.0e18))
            .prop_map(|n| Some(Value::Number(n))),
    ]
}

/// The login's end: like an expiry, or any JSON at all (parse ignores what it cannot read).
fn login_end_field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => expiry_field(),
        1 => json_value().prop_map(Some),
    ]
}

fn scopes_field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        (
            proptest::collection::vec(json_value(), 0..3),
            0usize..3,
            proptest::collection::vec(text(10), 0..3)
        )
            .prop_map(|(mut other, at, names)| {
                other.extend(names.into_iter().map(Value::String));
                let at = at.min(other.len());
                other.insert(at, Value::from("user:inference"));
                Some(Value::Array(other))
            }),
    ]
}

#[derive(Debug, Clone)]
struct Document {
    /// Top-level entries; `login_at` is where `claudeAiOauth` goes among them.
    top: Entries,
    login_at: usize,
    /// The entries of `claudeAiOauth`, token fields included, in order.
    login: Entries,
}

fn document() -> impl Strategy<Value = Document> {
    let extra = || proptest::collection::vec((text(10), json_value()), 0..5);
    (
        extra(),
        any::<prop::sample::Index>(),
        extra(),
        (
            token_field(),
            token_field(),
            expiry_field(),
            scopes_field(),
            login_end_field(),
        ),
        proptest::collection::vec(any::<prop::sample::Index>(), 5),
    )
        .prop_map(|(top, login_at, other, fields, places)| {
            let top = unique(top, &["claudeAiOauth"]);
            let login_at = login_at.index(top.len() + 1);
            let mut login = unique(other, &TOKEN_FIELDS);
            let (access, refresh, expires, scopes, end) = fields;
            let fields = [access, refresh, expires, scopes, end];
            for ((key, value), place) in TOKEN_FIELDS.iter().zip(fields).zip(places) {
                if let Some(value) = value {
                    // Anywhere among the other keys, in any order.
                    let at = place.index(login.len() + 1);
                    login.insert(at, (key.to_string(), value));
                }
            }
            Document {
                top,
                login_at,
                login,
            }
        })
}

fn response() -> impl Strategy<Value = TokenResponse> {
    (
        text(30),
        proptest::option::of(text(30)),
        prop_oneof![Just(28_800u64), any::<u64>()],
        proptest::option::of(prop_oneof![
            Just("user:inference user:profile".to_string()),
            Just("  ".to_string()),
            Just(String::new()),
            "( ?[a-z:_]{1,12} {1,3}){0,4}",
        ]),
        proptest::option::of(prop_oneof![Just(2_592_000u64), any::<u64>()]),
    )
        .prop_map(|(access, refresh, expires_in, scope, end)| TokenResponse {
            access_token: Secret::new(access),
            refresh_token: refresh.map(Secret::new),
            expires_in: Some(expires_in),
            scope,
            refresh_token_expires_in: end,
            id_token: None,
        })
}

fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

/// `{"k":v,...}` from entries already written out.
fn object_text(entries: &[(String, String)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}:{v}", compact(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn as_text(entries: &Entries) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(k, v)| (k.clone(), compact(v)))
        .collect()
}

impl Document {
    /// The whole document as compact text, written piece by piece.
    fn text_with(&self, login: &[(String, String)]) -> String {
        let mut top = as_text(&self.top);
        top.insert(
            self.login_at,
            ("claudeAiOauth".to_string(), object_text(login)),
        );
        object_text(&top)
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

/// The login entries after a refresh, by the rule Claude follows: each token field replaced
/// where it is, or appended when new; refreshToken kept when the response has none; scopes only
/// when the response names some; refreshTokenExpiresAt only where one is kept, and only moved
/// earlier.
fn expected_login(
    login: &[(String, String)],
    kept_end: Option<i64>,
    r: &TokenResponse,
    now: i64,
) -> Vec<(String, String)> {
    let mut out = login.to_vec();
    let mut set = |key: &str, value: String| match out.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => out.push((key.to_string(), value)),
    };
    set("accessToken", compact(&r.access_token.expose()));
    if let Some(refresh) = &r.refresh_token {
        set("refreshToken", compact(&refresh.expose()));
    }
    // A lifetime is believed up to a day, Claude's longest with a margin (issue 11: a server
    // claiming 1e30 s must not leave a time that never comes).
    set(
        "expiresAt",
        now.saturating_add(secs_to_ms(r.expires_in.unwrap_or(0).min(86_400)))
            .to_string(),
    );
    if let Some(scope) = r.scope.as_deref().filter(|s| !s.trim().is_empty()) {
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        set("scopes", compact(&scopes));
    }
    if let (Some(secs), Some(kept)) = (r.refresh_token_expires_in, kept_end) {
        let offered = now.saturating_add(secs_to_ms(secs));
        if offered < kept {
            set("refreshTokenExpiresAt", offered.to_string());
        }
    }
    out
}

fn file() -> CredentialsFile {
    CredentialsFile::new("/p/.credentials.json", claude::OWNER)
}

trait At {
    /// The same reader of Claude's keys, at another path.
    fn at(self, path: &std::path::Path) -> CredentialsFile;
}

impl At for CredentialsFile {
    fn at(self, path: &std::path::Path) -> CredentialsFile {
        CredentialsFile::new(path, claude::OWNER).with_keys(Some(vec!["claudeAiOauth".into()]))
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_refresh_changes_only_the_token_fields(
        doc in document(),
        r in response(),
        now in prop_oneof![Just(1_800_000_000_000i64), any::<i64>()],
    ) {
        let login = as_text(&doc.login);
        let original = doc.text_with(&login);
        let mut value: Value = serde_json::from_str(&original).expect("compact text parses");
        prop_assert_eq!(compact(&value), original.clone(), "parse and write is the identity");

        let parsed = claude::Claude.parse(&file(), &value);
        prop_assert!(parsed.is_ok(), "a login is refused: {:?}", parsed.err().map(|e| e.to_string()));
        let parsed = parsed.unwrap();
        claude::Claude.apply(&mut value, &r, now);
        let written = compact(&value);
        let expected = doc.text_with(&expected_login(&login, parsed.login_expires_at, &r, now));
        prop_assert_eq!(written, expected);
    }
}

/// A writer of JSON in any spelling a person or another tool might use: whitespace anywhere
/// between tokens, characters written as `\u` escapes, `/` as `\/`. Deterministic from a seed.
struct Spelling(u64);

impl Spelling {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn ws(&mut self) -> &'static str {
        ["", "", "", " ", "\n  ", "\t", " \r\n "][(self.next() % 7) as usize]
    }

    fn string(&mut self, text: &str) -> String {
        let mut out = String::from("\"");
        for c in text.chars() {
            let n = self.next() % 4;
            if n == 0 && (c as u32) < 0x10000 {
                out.push_str(&format!("\\u{:04x}", c as u32));
            } else if c == '/' && n == 1 {
                out.push_str("\\/");
            } else {
                let one = compact(&c.to_string());
                out.push_str(&one[1..one.len() - 1]);
            }
        }
        out.push('"');
        out
    }

    fn value(&mut self, v: &Value) -> String {
        match v {
            Value::String(text) => self.string(text),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(|i| self.value(i)).collect();
                self.join('[', parts, ']')
            }
            Value::Object(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .map(|(k, v)| self.member(k, &self.value_text(v)))
                    .collect();
                self.join('{', parts, '}')
            }
            other => compact(other),
        }
    }

    fn value_text(&self, v: &Value) -> String {
        Spelling(self.0 ^ 0x9e37_79b9).value(v)
    }

    fn member(&self, key: &str, value: &str) -> String {
        let mut s = Spelling(self.0 ^ key.len() as u64);
        format!("{}{}:{}{value}", s.string(key), s.ws(), s.ws())
    }

    fn join(&mut self, open: char, parts: Vec<String>, close: char) -> String {
        let mut out = format!("{open}{}", self.ws());
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push_str(&format!("{},{}", self.ws(), self.ws()));
            }
            out.push_str(part);
        }
        out.push_str(self.ws());
        out.push(close);
        out
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Through the file, in any spelling: writing back what was read is the identity, and a
    /// refresh leaves every byte outside `claudeAiOauth`, and every member of it that is not a
    /// token field, exactly as written.
    #[test]
    fn a_refresh_of_any_spelling_keeps_every_other_byte(
        doc in document(),
        r in response(),
        seed in any::<u64>(),
        now in prop_oneof![Just(1_800_000_000_000i64), any::<i64>()],
    ) {
        let mut spell = Spelling(seed);
        let login_members: Vec<(String, String)> = doc
            .login
            .iter()
            .map(|(k, v)| (k.clone(), spell.member(k, &spell.value_text(v))))
            .collect();
        let login_text = spell.join(
            '{',
            login_members.iter().map(|(_, m)| m.clone()).collect(),
            '}',
        );
        let mut top: Vec<String> = doc
            .top
            .iter()
            .map(|(k, v)| spell.member(k, &spell.value_text(v)))
            .collect();
        let login_member = spell.member("claudeAiOauth", &login_text);
        top.insert(doc.login_at, login_member.clone());
        let original = format!("{}{}{}", spell.ws(), spell.join('{', top, '}'), spell.ws());
        let login_start = original.find(&login_member).expect("the login is in the text")
            + login_member.len()
            - login_text.len();
        let login_end = login_start + login_text.len();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".credentials.json");
        std::fs::write(&path, &original).unwrap();
        let file = file().at(&path);
        let guard = WriteGuard::new(&());
        let snap = file.read().expect("any spelling reads");
        file.write(&snap.doc, &guard).unwrap();
        prop_assert_eq!(std::fs::read_to_string(&path).unwrap(), original.clone(), "read and write is the identity");

        let mut value = snap.doc.clone();
        let parsed = claude::Claude.parse(&file, &value);
        prop_assert!(parsed.is_ok(), "a login is refused: {:?}", parsed.err().map(|e| e.to_string()));
        let parsed = parsed.unwrap();
        claude::Claude.apply(&mut value, &r, now);
        file.write(&value, &guard).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        let tail = original.len() - login_end;
        prop_assert_eq!(&written[..login_start], &original[..login_start]);
        prop_assert_eq!(&written[written.len() - tail..], &original[login_end..]);
        let new_login: Value = serde_json::from_str(&written[login_start..written.len() - tail]).unwrap();
        let expected: Value = serde_json::from_str(&object_text(&expected_login(
            &as_text(&doc.login), parsed.login_expires_at, &r, now,
        ))).unwrap();
        prop_assert_eq!(new_login, expected);
        for (key, member) in &login_members {
            if !TOKEN_FIELDS.contains(&key.as_str()) {
                prop_assert!(written.contains(member.as_str()), "{} was rewritten", key);
            }
        }
    }
}

/// A file as Claude Code writes it (JavaScript's `JSON.stringify`: compact, numbers like `1.5`,
/// `1e+21`, `1e-7`, non-ASCII as is, only `"`, `\\` and controls escaped).
#[test]
fn a_refresh_of_a_real_file_changes_only_the_token_fields() {
    let original = concat!(
        r#"{"before":{"x":[1.5,-0,1e+21,1e-7,12345678901234567890123]},"claudeAiOauth":{"#,
        r#""subscriptionType":"max","accessToken":"sk-ant-oat01-a","expiresAt":1795993258619,"#,
        r#""refreshTokenExpiresAt":1798000000000,"scopes":["user:inference"],"#,
        r#""refreshToken":"sk-ant-ort01-r","rateLimitTier":null},"#,
        r#""mcpOAuth":{"s|1":{"accessToken":"é\u0000\"\\🔑\u001b\n"}}}"#
    );
    let mut doc: Value = serde_json::from_str(original).unwrap();
    assert_eq!(compact(&doc), original);
    let r = TokenResponse {
        access_token: Secret::new("new\"a"),
        refresh_token: Some(Secret::new("new-r")),
        expires_in: Some(28_800),
        scope: None,
        refresh_token_expires_in: Some(30 * 86_400),
        id_token: None,
    };
    claude::Claude.apply(&mut doc, &r, 1_795_000_000_000);
    let want = original
        .replace(r#""sk-ant-oat01-a""#, r#""new\"a""#)
        .replace("1795993258619", "1795028800000")
        .replace("1798000000000", "1797592000000")
        .replace(r#""sk-ant-ort01-r""#, r#""new-r""#);
    assert_eq!(compact(&doc), want);
}

/// Spellings JavaScript never writes are normalized by serde_json's own writer (even with
/// `arbitrary_precision`): an upper-case or unsigned exponent, `\u` escapes of printable
/// characters, whitespace. That is why a credentials file is no longer written through it: the
/// next test shows each spelling kept through a refresh.
#[test]
fn spellings_that_are_normalized() {
    for (written, kept) in [
        ("1E+400", "1e+400"),
        ("1.798e12", "1.798e+12"),
        ("1.50", "1.50"),
        ("-0", "-0"),
        (r#""\u00e9\/""#, r#""é/""#),
        ("[ 1 ,\n 2 ]", "[1,2]"),
    ] {
        let v: Value = serde_json::from_str(written).unwrap();
        assert_eq!(compact(&v), kept, "{written}");
    }
}

/// The same spellings, in keys a refresh does not touch, are kept byte for byte by a refresh
/// written through the credentials file (and so are those serde_json refuses to read at all).
#[test]
fn spellings_are_kept_through_a_refresh() {
    let odd = [
        "1E+400",
        "1E5",
        "1.798e12",
        "1.50",
        "-0",
        "1e400",
        r#""\u00e9\/""#,
        r#""\ud800""#,
        "[ 1 ,\n 2 ]",
    ];
    let unknown: Vec<String> = odd
        .iter()
        .enumerate()
        .map(|(i, v)| format!("\"k{i}\" : {v}"))
        .collect();
    let original = format!(
        "{{\n  {},\n  \"claudeAiOauth\": {{\"accessToken\":\"a\",\"refreshToken\":\"r\",\"expiresAt\":1,\"odd\":1E5}}\n}}\n",
        unknown.join(",\n  ")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".credentials.json");
    std::fs::write(&path, &original).unwrap();
    let file = file().at(&path);
    let mut snap = file.read().unwrap();
    let r = TokenResponse {
        access_token: Secret::new("A"),
        refresh_token: None,
        expires_in: Some(60),
        scope: None,
        refresh_token_expires_in: None,
        id_token: None,
    };
    claude::Claude.apply(&mut snap.doc, &r, 1000);
    file.write(&snap.doc, &WriteGuard::new(&())).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        original
            .replace(r#""accessToken":"a""#, r#""accessToken":"A""#)
            .replace(r#""expiresAt":1,"#, r#""expiresAt":61000,"#)
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Expiry arithmetic never overflows or panics.

fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MIN + 1),
        Just(-1i64),
        Just(0i64),
        Just(1i64),
        Just(i64::MAX - 1),
        Just(i64::MAX),
        0i64..4_000_000_000_000,
    ]
}

fn extreme_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        any::<u64>().prop_map(Duration::from_millis),
        (0u64..100 * 86_400).prop_map(Duration::from_secs),
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::MAX),
    ]
}

/// The random number the callers draw is in [0, 1); the functions clamp anything else. NaN is
/// left out: `f64::clamp` keeps it, and no caller can produce one (`fastrand::f64`).
fn jitter() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0f64..1.0,
        Just(0.0),
        Just(0.999_999_999_999),
        Just(1.0),
        Just(-1.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
    ]
}

fn any_login() -> impl Strategy<Value = Login> {
    (
        prop_oneof![Just(""), Just("a")],
        prop_oneof![Just(""), Just("r")],
        extreme_i64(),
        proptest::option::of(extreme_i64()),
    )
        .prop_map(|(a, r, expires_at, login_expires_at)| Login {
            access_token: Secret::new(a),
            refresh_token: Secret::new(r),
            expires_at,
            login_expires_at,
            scopes: None,
        })
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn login_arithmetic_is_total(
        login in any_login(),
        now in extreme_i64(),
        ttl in extreme_duration(),
    ) {
        let left = login.remaining_ms(now);
        prop_assert_eq!(i128::from(left), (i128::from(login.expires_at) - i128::from(now))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)));
        let f = login.freshness(now, ttl);
        prop_assert_eq!(login.is_due(now, ttl), matches!(f, Freshness::Due | Freshness::Expired));
        if login.is_usable_for(now, ttl) {
            prop_assert!(!login.access_token.is_empty() && left >= duration_ms(ttl));
        }
        if f == Freshness::Fresh {
            prop_assert!(login.is_usable_for(now, ttl));
        }
    }

    #[test]
    fn schedule_arithmetic_is_total(
        refresh_before in extreme_duration(),
        lifetime in proptest::option::of(extreme_duration()),
        expires_at in extreme_i64(),
        j in jitter(),
    ) {
        let margin = schedule::margin(refresh_before, lifetime);
        prop_assert!(margin <= refresh_before);
        if let Some(life) = lifetime {
            prop_assert!(margin <= life / 2);
        }
        let lead = schedule::lead(margin, j);
        prop_assert!(lead >= margin);
        prop_assert!(lead - margin <= schedule::JITTER_MAX);
        let at = schedule::refresh_at(expires_at, lead);
        prop_assert!(at <= expires_at);
    }

    #[test]
    fn backoff_is_total_and_bounded(
        failures in prop_oneof![any::<u32>(), 0u32..40],
        retry_after in proptest::option::of(extreme_duration()),
        j in jitter(),
    ) {
        let wait = schedule::backoff(failures, retry_after, j);
        prop_assert!(wait >= schedule::BACKOFF_MIN);
        // Retry-After is honoured up to RETRY_AFTER_MAX, no further.
        match retry_after.map(|r| r.min(schedule::RETRY_AFTER_MAX)) {
            Some(r) if r >= schedule::BACKOFF_MAX => prop_assert_eq!(wait, r),
            Some(r) => prop_assert!(wait >= r && wait <= schedule::BACKOFF_MAX),
            None => prop_assert!(wait <= schedule::BACKOFF_MAX),
        }
    }

    #[test]
    fn login_ending_reminder_is_total(
        end in proptest::option::of(extreme_i64()),
        now in extreme_i64(),
        within in extreme_duration(),
        last in proptest::option::of(extreme_i64()),
    ) {
        let due = schedule::login_ending_reminder_due(end, now, within, last);
        if end.is_none() {
            prop_assert!(!due);
        }
        if last.is_some_and(|l| l == now) {
            prop_assert!(!due, "never twice in the same moment");
        }
    }

    #[test]
    fn retry_policy_is_total(
        // `total` comes from the config (`retry_total`): any duration::parse result. `base` and
        // `cap` are fixed in the code (1 s, 16 s); they are tried up to 2^40 s (35,000 years),
        // where `Duration::mul_f64` is still exact to the second.
        total in extreme_duration(),
        base in prop_oneof![Just(Duration::from_secs(1)), (0u64..1 << 40).prop_map(Duration::from_secs)],
        cap in prop_oneof![Just(Duration::from_secs(16)), (0u64..1 << 40).prop_map(Duration::from_secs)],
        attempt in any::<u32>(),
        elapsed in extreme_duration(),
        retry_after in proptest::option::of(extreme_duration()),
        j in jitter(),
    ) {
        let p = RetryPolicy { total, base, cap };
        match p.next(attempt, elapsed, retry_after, j) {
            Next::RetryAfter(wait) => {
                prop_assert!(elapsed.checked_add(wait).is_some_and(|end| end < total));
                prop_assert!(retry_after.is_none_or(|r| wait >= r));
                prop_assert!(wait <= cap.max(retry_after.unwrap_or_default()));
            }
            Next::GiveUp => {}
        }
    }

    #[test]
    fn durations_print_and_parse_without_panicking(
        d in extreme_duration(),
        ms in extreme_i64(),
        junk in prop_oneof![
            text(16),
            "[0-9]{0,25} ?(ms|s|m|h|d|days|x)? ?[0-9]{0,25}(ms|s|m|h|d)?",
        ],
    ) {
        let h = duration::human(d);
        prop_assert!(!h.is_empty() && h.len() < 40, "{}", h);
        let r = duration::relative(ms);
        prop_assert!(r.starts_with("in ") || r.ends_with(" ago"), "{}", r);
        let _ = duration::parse(&junk);
    }
}

/// A huge `refresh_before` is refused when read ("out of range"), and even the largest margin a
/// caller can build (`Duration::MAX`) saturates in `schedule::lead` instead of panicking.
#[test]
fn lead_saturates_for_a_huge_margin() {
    assert!(
        duration::parse("300000000000000d")
            .unwrap_err()
            .contains("out of range")
    );
    let margin = schedule::margin(Duration::MAX, None);
    let lead = std::panic::catch_unwind(|| schedule::lead(margin, 0.5));
    assert!(
        lead.is_ok_and(|l| l >= margin),
        "schedule::lead({margin:?}, 0.5) panicked (Duration overflow in `margin + spread`)"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) `duration::parse` reads back what `duration::human` prints.

/// The smallest unit `human` prints for `d`: it shows the two largest units, and from 10
/// minutes on it leaves the seconds out.
fn printed_unit(d: Duration) -> u64 {
    match d.as_secs() {
        s if s < 600 => 1,
        s if s < 86_400 => 60,
        _ => 3600,
    }
}

proptest! {
    #![proptest_config(config(2048))]

    /// `human` prints a truncation of `d` to its printed unit (sub-second parts dropped), and
    /// `parse` reads exactly that back: `parse(human(d)) == d` when `d` is a whole number of
    /// that unit, and `human` is a fixed point of `parse ∘ human` in every case.
    #[test]
    fn parse_reads_back_what_human_prints(
        d in prop_oneof![
            extreme_duration(),
            (0u64..120).prop_map(Duration::from_secs),
            (0u64..3 * 86_400).prop_map(Duration::from_secs),
            (0u64..400).prop_map(|h| Duration::from_secs(h * 3600)),
        ],
    ) {
        let shown = duration::human(d);
        let back = duration::parse(&shown);
        prop_assert!(back.is_ok(), "{:?} printed as {:?}: {:?}", d, shown, back);
        let back = back.unwrap();
        let unit = printed_unit(d);
        let truncated = Duration::from_secs(d.as_secs() / unit * unit);
        prop_assert_eq!(back, truncated, "{:?} printed as {:?}", d, shown);
        prop_assert_eq!(duration::human(back), shown);
    }

    /// What people write (`1h30m`, `90s`, `2d 3h`, `500ms`) parses to the sum of its parts.
    #[test]
    fn parse_adds_the_parts(
        parts in proptest::collection::vec(
            (0u64..100_000, prop_oneof![
                Just(("ms", 0u64)), Just(("s", 1)), Just(("sec", 1)), Just(("m", 60)),
                Just(("min", 60)), Just(("h", 3600)), Just(("hours", 3600)),
                Just(("d", 86_400)), Just(("days", 86_400)),
            ]),
            1..5,
        ),
        space in any::<bool>(),
    ) {
        let sep = if space { " " } else { "" };
        let text: Vec<String> = parts.iter().map(|(n, (u, _))| format!("{n}{sep}{u}")).collect();
        let text = text.join(sep);
        let want: Duration = parts
            .iter()
            .map(|(n, (_, secs))| {
                if *secs == 0 { Duration::from_millis(*n) } else { Duration::from_secs(n * secs) }
            })
            .sum();
        prop_assert_eq!(duration::parse(&text), Ok(want), "{}", text);
    }
}
