//! JSON pointers (RFC 6901), which `[[login]]` tables use to say where a tool keeps its tokens:
//! parse one, read the value it names, and write a value there, making the objects on the way
//! when they are missing. serde_json's own `Value::pointer` reads but cannot create a path, and
//! cannot tell "absent" from "something else is in the way", which our messages need.

use serde_json::{Map, Value};

/// A pointer such as `/tokens/access_token` or `/oauth~1v2/0/token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    /// Its reference tokens, unescaped (`~1` is `/`, `~0` is `~`).
    tokens: Vec<String>,
}

/// A value on the way that cannot hold what the pointer names (a string where an object should
/// be, say).
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked<'a> {
    /// The pointer to that value; "" for the document itself.
    pub at: String,
    pub value: &'a Value,
}

impl Pointer {
    /// Parses a pointer; the error says what is wrong with it, as the end of a sentence that
    /// begins with the pointer.
    pub fn parse(text: &str) -> Result<Pointer, String> {
        let Some(rest) = text.strip_prefix('/') else {
            if text.is_empty() {
                return Ok(Pointer {
                    text: String::new(),
                    tokens: Vec::new(),
                });
            }
            return Err(format!(
                "is not a JSON pointer; write it with a leading /, like \"/{text}\""
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(
                            "has a ~ that is not ~0 or ~1; write ~ as ~0, and / inside a key as ~1"
                                .into(),
                        );
                    }
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its reference tokens, unescaped: the path from the document's root.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The key of the first step (`"tokens"` for `/tokens/access_token`); None for the root.
    pub fn first_token(&self) -> Option<&str> {
        self.tokens.first().map(String::as_str)
    }

    /// The pointer `""`: the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// One is the other, or holds it: writing one changes the other.
    pub fn overlaps(&self, other: &Pointer) -> bool {
        let n = self.tokens.len().min(other.tokens.len());
        self.tokens[..n] == other.tokens[..n]
    }

    /// The value the pointer names; None when it, or an object on the way, is absent or null.
    pub fn find<'a>(&self, doc: &'a Value) -> Result<Option<&'a Value>, Blocked<'a>> {
        let mut here = doc;
        for (depth, token) in self.tokens.iter().enumerate() {
            let next = match here {
                Value::Object(map) => map.get(token),
                Value::Array(items) if array_index(token).is_some() => {
                    array_index(token).and_then(|at| items.get(at))
                }
                Value::Null => None,
                _ => {
                    return Err(Blocked {
                        at: self.prefix(depth),
                        value: here,
                    });
                }
            };
            match next {
                Some(v) => here = v,
                None => return Ok(None),
            }
        }
        Ok(Some(here))
    }

    /// Writes `value` where the pointer names, making objects on the way where they are missing
    /// or null, and growing an array up to an index it names (with nulls). A value on the way
    /// that cannot hold the next step (which [`Pointer::find`] reports) is replaced by an
    /// object: a write must never be dropped.
    pub fn set(&self, doc: &mut Value, value: Value) {
        let mut here = doc;
        for token in &self.tokens {
            let index = array_index(token);
            let fits = match here {
                Value::Object(_) => true,
                Value::Array(_) => index.is_some(),
                _ => false,
            };
            if !fits {
                *here = Value::Object(Map::new());
            }
            here = match (here, index) {
                (Value::Array(items), Some(at)) => {
                    if items.len() <= at {
                        items.resize(at + 1, Value::Null);
                    }
                    &mut items[at]
                }
                (Value::Object(map), _) => map.entry(token.clone()).or_insert(Value::Null),
                (other, _) => other,
            };
        }
        *here = value;
    }

    /// The pointer of the first `n` tokens.
    fn prefix(&self, n: usize) -> String {
        self.tokens[..n]
            .iter()
            .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
            .collect()
    }
}

/// An array index as RFC 6901 writes one: digits without a leading zero. Larger than a credentials
/// file could hold (over six digits) counts as no index, so a write never grows a huge array.
pub(crate) fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    let canonical = token == "0" || !token.starts_with('0');
    if digits && canonical && token.len() <= 6 {
        token.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    #[test]
    fn parses_and_unescapes_as_rfc_6901_says() {
        assert_eq!(p("/a~1b/m~0n/0").tokens, ["a/b", "m~n", "0"]);
        assert_eq!(p("/").tokens, [""]);
        assert!(p("").is_root());
        assert_eq!(p("/a~01").tokens, ["a~1"], "~01 is ~ then 1");
        assert_eq!(
            Pointer::parse("tokens/access").unwrap_err(),
            "is not a JSON pointer; write it with a leading /, like \"/tokens/access\""
        );
        for bad in ["/a~", "/a~2", "/~x"] {
            assert!(Pointer::parse(bad).unwrap_err().contains("~0"), "{bad}");
        }
        assert_eq!(p("/a~1b/m~0n").prefix(2), "/a~1b/m~0n");
    }

    #[test]
    fn finds_values_and_tells_absent_from_blocked() {
        let doc = json!({"a/b": {"m~n": ["x"]}, "": "e", "s": "text", "n": null, "o": {"1": "k"}});
        assert_eq!(p("/a~1b/m~0n/0").find(&doc), Ok(Some(&json!("x"))));
        assert_eq!(p("/").find(&doc), Ok(Some(&json!("e"))));
        assert_eq!(p("").find(&doc), Ok(Some(&doc)));
        assert_eq!(
            p("/o/1").find(&doc),
            Ok(Some(&json!("k"))),
            "an object's \"1\" is a key"
        );
        assert_eq!(p("/missing/x").find(&doc), Ok(None));
        assert_eq!(p("/n/x").find(&doc), Ok(None), "null on the way is absent");
        assert_eq!(p("/a~1b/m~0n/1").find(&doc), Ok(None));
        let blocked = p("/s/x").find(&doc).unwrap_err();
        assert_eq!((blocked.at.as_str(), blocked.value), ("/s", &json!("text")));
        let blocked = p("/a~1b/m~0n/first").find(&doc).unwrap_err();
        assert_eq!(blocked.at, "/a~1b/m~0n", "an array needs an index");
        assert_eq!(p("/x").find(&json!([1])).unwrap_err().at, "");
    }

    #[test]
    fn array_indexes_have_no_leading_zero_or_sign() {
        for (index, ok) in [
            ("0", Some(0)),
            ("12", Some(12)),
            ("999999", Some(999_999)),
            ("1000000", None),
            ("01", None),
            ("-", None),
            ("-1", None),
            ("+1", None),
            ("x", None),
            ("", None),
        ] {
            assert_eq!(array_index(index), ok, "{index}");
        }
    }

    #[test]
    fn set_makes_the_path_and_keeps_everything_else_in_place() {
        let mut doc = json!({"z": 1, "list": [{"t": "a"}], "n": null});
        p("/list/1/t").set(&mut doc, json!("b"));
        p("/n/deep/er").set(&mut doc, json!(2));
        p("/new/x").set(&mut doc, json!(3));
        p("/z").set(&mut doc, json!(4));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"z":4,"list":[{"t":"a"},{"t":"b"}],"n":{"deep":{"er":2}},"new":{"x":3}}"#
        );
        let mut gap = json!({"l": []});
        p("/l/2").set(&mut gap, json!("c"));
        assert_eq!(gap, json!({"l": [null, null, "c"]}));
        let mut blocked = json!({"s": "text", "l": [1]});
        p("/s/x").set(&mut blocked, json!("new"));
        p("/l/key").set(&mut blocked, json!("new"));
        assert_eq!(blocked, json!({"s": {"x": "new"}, "l": {"key": "new"}}));
        let mut whole = json!({"a": 1});
        p("").set(&mut whole, json!("all"));
        assert_eq!(whole, json!("all"));
    }

    #[test]
    fn overlapping_pointers_are_found() {
        assert!(p("/a/b").overlaps(&p("/a/b")));
        assert!(p("/a").overlaps(&p("/a/b")));
        assert!(p("/a/b").overlaps(&p("/a")));
        assert!(p("").overlaps(&p("/a")));
        assert!(!p("/a/b").overlaps(&p("/a/c")));
        assert!(!p("/ab").overlaps(&p("/a")));
        assert!(p("/a~1b").overlaps(&p("/a~1b/c")));
        assert!(!p("/a~1b").overlaps(&p("/a/b")));
    }
}
