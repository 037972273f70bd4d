//! What is sent to a token endpoint and how its error answers are read: the wire types every
//! provider fills in ([`crate::provider::Provider`] builds the request and names its rule), kept
//! here so the endpoint client needs nothing of the providers.

use serde_json::Value;

/// A token request: its body and any headers beyond the usual ones.
#[derive(Clone)]
pub struct TokenRequest {
    pub body: Body,
    pub headers: Vec<(String, String)>,
}

impl From<Body> for TokenRequest {
    /// A request of `body` and the usual headers alone.
    fn from(body: Body) -> TokenRequest {
        TokenRequest {
            body,
            headers: Vec::new(),
        }
    }
}

/// The body holds the refresh token (and maybe a client secret): never log it.
#[derive(Clone)]
pub enum Body {
    /// `application/json`.
    Json(Value),
    /// `application/x-www-form-urlencoded`, in this order.
    Form(Vec<(String, String)>),
}

impl Body {
    /// The content type and the encoded bytes.
    pub fn encode(&self) -> (&'static str, Vec<u8>) {
        match self {
            Body::Json(v) => ("application/json", v.to_string().into_bytes()),
            Body::Form(pairs) => {
                let mut out = String::new();
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push('&');
                    }
                    form_escape(&mut out, k);
                    out.push('=');
                    form_escape(&mut out, v);
                }
                ("application/x-www-form-urlencoded", out.into_bytes())
            }
        }
    }
}

/// `application/x-www-form-urlencoded` escaping: unreserved bytes as they are, space as `+`,
/// everything else `%XX`.
fn form_escape(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// Which error answers from the token endpoint mean the login is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectionRule {
    /// 400, 401 or 403 with `invalid_grant`, `invalid_client` or `unauthorized_client`.
    OAuth,
    /// As [`RejectionRule::OAuth`], and also any 401 with an OAuth error body whatever its code
    /// (OpenAI's endpoint); an HTML or empty 401 (a proxy's) stays transient.
    OAuthOrAny401,
}
