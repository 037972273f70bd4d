#!/usr/bin/env python3
"""The common hand-made workaround, as the benchmark's reference: read Claude Code's credentials
file, and when less than an hour is left, post the refresh token and write the answer back. No
lock, no re-read, no atomic write, no retry: what people paste into a cron job."""
import json, os, sys, time, urllib.request

path = os.path.expanduser(os.environ.get("CREDS", "~/.claude/.credentials.json"))
url = os.environ.get("TOKEN_URL", "https://platform.claude.com/v1/oauth/token")
with open(path) as f:
    doc = json.load(f)
oauth = doc["claudeAiOauth"]
if oauth["expiresAt"] - time.time() * 1000 > 3600_000:
    sys.exit(0)
body = json.dumps({"grant_type": "refresh_token", "refresh_token": oauth["refreshToken"],
                   "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e"}).encode()
req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        tokens = json.load(r)
except Exception as e:
    print(f"refresh failed: {e}", file=sys.stderr)
    sys.exit(1)
oauth["accessToken"] = tokens["access_token"]
oauth["refreshToken"] = tokens.get("refresh_token", oauth["refreshToken"])
oauth["expiresAt"] = int(time.time() * 1000) + tokens["expires_in"] * 1000
with open(path, "w") as f:
    json.dump(doc, f)
