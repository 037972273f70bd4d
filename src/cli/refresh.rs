//! `tokenkeeper refresh`: refresh when due (or forced) and say what was done.

use super::Context;
use super::output::{self, rfc3339, when};
use crate::Error;
use crate::login::now_ms;
use crate::refresh::{Action, Want};
use serde_json::json;

pub fn run(ctx: &Context, force: bool, json: bool) -> Result<u8, Error> {
    let want = Want {
        min_ttl: ctx.settings.min_ttl,
        force,
    };
    let outcome = ctx.refresh_if_due(want)?;
    let now = now_ms();
    let login = &outcome.login;
    if json {
        let value = json!({
            "provider": ctx.file.owner().provider,
            "credentials": ctx.file.path(),
            "action": outcome.action.as_str(),
            "access_expires_at": rfc3339(login.expires_at),
            "access_expires_in_s": login.remaining_ms(now) / 1000,
            "token_requests": outcome.attempts,
        });
        output::stdout(&format!("{value}\n"));
    } else if !ctx.quiet {
        let what = match outcome.action {
            Action::NotDue => format!(
                "not due (refreshes when less than {} is left)",
                crate::duration::human(ctx.settings.min_ttl)
            ),
            Action::Refreshed => "refreshed".to_string(),
            Action::Adopted => "adopted a refresh made by another process".to_string(),
            Action::Restored => "restored new tokens from the recovery file".to_string(),
            Action::Deferred => {
                "not refreshed yet: runs started with `exec --inject env` hold the current token"
                    .to_string()
            }
            Action::KeptOnDisk => {
                "refreshed, but the file now holds another login, which was kept".to_string()
            }
        };
        output::stdout(&format!(
            "{what}: access token expires {}\n",
            when(login.expires_at, now)
        ));
    }
    Ok(0)
}
