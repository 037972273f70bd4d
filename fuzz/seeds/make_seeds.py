#!/usr/bin/env python3
"""Writes the hand-made seed inputs of each fuzz target into fuzz/seeds/<target>/.

The committed corpus (fuzz/corpus/<target>/) is these seeds plus what fuzzing found, minimized
with `cargo fuzz cmin`; rerun this and `scripts/fuzz --reseed` after changing the seeds.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

SCOPES = ["user:inference", "user:profile", "user:sessions:claude_code", "user:mcp_servers",
          "user:file_upload", "user:plugins"]


def login(**extra):
    o = {"accessToken": "sk-ant-oat01-" + "A" * 40, "refreshToken": "sk-ant-ort01-" + "B" * 40,
         "expiresAt": 1795993258619, "scopes": SCOPES, "subscriptionType": "max",
         "rateLimitTier": None}
    o.update(extra)
    return o


def compact(doc):
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def credentials():
    deep = {"claudeAiOauth": login()}
    node = deep
    for i in range(100):
        node["n"] = {"i": [i, {"x": None}]}
        node = node["n"]
    seeds = {
        "valid_login": compact({"claudeAiOauth": login()}),
        "valid_login_pretty": json.dumps({"claudeAiOauth": login()}, indent=2).encode() + b"\n",
        "wiped_login": compact({"claudeAiOauth": {"accessToken": "", "refreshToken": "",
                                                  "expiresAt": 0, "scopes": [],
                                                  "loginEnded": "time_limit"}}),
        "wiped_null": compact({"claudeAiOauth": {"accessToken": None, "refreshToken": None,
                                                 "expiresAt": None}}),
        "login_end": compact({"claudeAiOauth": login(refreshTokenExpiresAt=1798000000000,
                                                     clientId="9d1c250a", accountUuid="u-1",
                                                     organizationUuid="o-1")}),
        "mcp_oauth": compact({"before": 1, "claudeAiOauth": login(), "mcpOAuth": {
            "github|abc": {"serverName": "github", "serverUrl": "https://example.invalid/mcp",
                           "accessToken": "gho_x", "expiresAt": 0, "discoveryState": {
                               "authorizationServerUrl": "https://example.invalid"}}},
            "pluginSecrets": {"p": {"k": "v"}}}),
        "unicode": compact({"\u00e9t\u00e9": "\u65e5\u672c\u8a9e \U0001F511", "claudeAiOauth":
                            login(note="tab\there \"quoted\" \\ back \u2028 \u0000 nul")}),
        # Escapes and numbers as other writers spell them; json.dumps cannot.
        "escapes_numbers": b'{"claudeAiOauth":{"accessToken":"a\\u00e9\\ud83d\\udd11\\/x",'
                           b'"refreshToken":"r","expiresAt":1.795993258619e12,'
                           b'"scopes":["user:inference"],"refreshTokenExpiresAt":1798000000000.0},'
                           b'"big":123456789012345678901234567890,"f":1.50,"e":1E+400,'
                           b'"neg":-0.0,"tiny":5e-324,"max":18446744073709551616}',
        "big_expiry": b'{"claudeAiOauth":{"accessToken":"a","refreshToken":"r",'
                      b'"expiresAt":9223372036854775807,"refreshTokenExpiresAt":-9223372036854775808,'
                      b'"scopes":["user:inference"]}}',
        "float_expiry": b'{"claudeAiOauth":{"accessToken":"a","refreshToken":"r",'
                        b'"expiresAt":8.9e18,"refreshTokenExpiresAt":1e300,'
                        b'"scopes":["user:inference",3,null]}}',
        "deep_nesting": compact(deep),
        "duplicate_keys": b'{"claudeAiOauth":{"accessToken":"a"},"x":1,'
                          b'"claudeAiOauth":{"accessToken":"b","refreshToken":"r","expiresAt":2}}',
        "no_scopes": compact({"claudeAiOauth": {"accessToken": "a", "refreshToken": "r",
                                                "expiresAt": 1}}),
        "bad_scopes": compact({"claudeAiOauth": login(scopes=["user:profile"])}),
        "not_object": b'{"claudeAiOauth":[1,2,3]}',
        "array_root": b'[{"claudeAiOauth":{}}]',
    }
    return seeds


def response(status, body, retry_after=None):
    if retry_after is None:
        head = struct.pack("<HB", status, 255)
    else:
        ra = retry_after.encode()
        head = struct.pack("<HB", status, len(ra)) + ra
    return head + (body if isinstance(body, bytes) else compact(body))


def token_responses():
    ok = {"token_type": "Bearer", "access_token": "sk-ant-oat01-x", "refresh_token": "sk-ant-ort01-y",
          "expires_in": 28800, "scope": " ".join(SCOPES),
          "account": {"uuid": "u", "email_address": "a@example.invalid"},
          "organization": {"uuid": "o"}}
    return {
        "ok": response(200, ok),
        "ok_login_end": response(200, dict(ok, refresh_token_expires_in=2592000)),
        "ok_keep_refresh": response(200, {"access_token": "a", "expires_in": 60}),
        "ok_string_expiry": response(200, {"access_token": "a", "expires_in": "3600"}),
        "ok_float_expiry": b"\xc8\x00\xff" + b'{"access_token":"a","expires_in":1.8e19}',
        "ok_empty_token": response(200, {"access_token": "", "expires_in": 60}),
        "invalid_grant": response(400, {"error": "invalid_grant",
                                        "error_description": "Refresh token not found or invalid"}),
        "expired": response(400, {"error": "invalid_grant",
                                  "error_description": "Refresh token expired"}),
        "invalid_client": response(401, {"error": "invalid_client"}),
        "unauthorized_client": response(403, {"error": "unauthorized_client",
                                              "error_description": "x\ny\u0007" + "z" * 300}),
        "rate_limit": response(429, {"type": "error", "error": {"type": "rate_limit_error",
                                                              "message": "slow down"}}, "7"),
        "rate_limit_date": response(429, b"", "Sun, 06 Nov 2094 08:49:37 GMT"),
        "overloaded": response(529, {"type": "error", "error": {"type": "overloaded_error",
                                                              "message": "Overloaded"}}, "120"),
        "server_error": response(500, b"oops"),
        "html_proxy": response(200, b"<!DOCTYPE html><html><body>Sign in to the proxy</body></html>"),
        "html_gateway": response(502, b"<html><head><title>502 Bad Gateway</title></head></html>"),
        "empty": response(503, b""),
        "unicode_error": response(400, {"error": "\u00e9\u65e5", "error_description": "\U0001F511"}),
    }


def auth_streams():
    result = {"type": "result", "subtype": "success", "is_error": True, "api_error_status": 401,
              "api_error_type": "authentication_error",
              "result": "Failed to authenticate. API Error: 401 Invalid authentication credentials"}
    retry = {"type": "system", "subtype": "api_retry", "error": "authentication_failed",
             "error_status": 401}
    return {
        "text_401": b"\x06Failed to authenticate. API Error: 401 Invalid authentication credentials\n",
        "text_expired": b"\x00Failed to authenticate: OAuth session expired and could not be refreshed",
        "text_not_logged_in": "\x03Not logged in \u00b7 Please run /login\n".encode(),
        "json_result": b"\x10" + compact(result) + b"\n",
        "json_expired": b"\x01" + compact(dict(result, result="OAuth session expired")),
        "stream_json": b"\x20" + compact({"type": "system", "subtype": "init"}) + b"\n"
                       + compact(retry) + b"\n" + compact({"type": "result", "is_error": False,
                                                            "result": "Please run /login"}) + b"\n",
        "ok_output": b"\x40all good\nhere is your answer\r\n\xff\xfe invalid utf-8\n",
        "other_error": b"\x05" + compact({"type": "result", "is_error": True,
                                           "api_error_status": 529}) + b"\n",
        "codex_refresh_used": b"\x09ERROR: Your access token could not be refreshed because your"
                              b" refresh token was already used. Please log out and sign in again.\n" * 2,
        "codex_401": b"\x02ERROR: unexpected status 401 Unauthorized: Missing bearer\n",
        "codex_json": b"\x11" + compact({"type": "turn.started"}) + b"\n"
                      + compact({"type": "error", "message": "unexpected status 401 Unauthorized"})
                      + b"\n" + compact({"type": "turn.failed", "error": {
                          "message": "Your access token could not be refreshed. Please log out and sign in again."}})
                      + b"\n",
        "gemini_manual": b"\x07Error authenticating: FatalAuthenticationError: Manual authorization"
                         b" is required but the current session is non-interactive.\n",
        "gemini_401": b"\x0bError authenticating: [API Error: Request had invalid authentication"
                      b" credentials.]\n",
    }


def main():
    for target, seeds in [("claude_credentials", credentials()),
                          ("token_response", token_responses()),
                          ("auth_failure", auth_streams())]:
        folder = os.path.join(HERE, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
