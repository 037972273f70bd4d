//! `tokenkeeper token`: a valid access token on stdout and nothing else, for scripts.

use super::Context;
use super::output;
use tokenkeeper::Error;

pub fn run(ctx: &Context) -> Result<u8, Error> {
    let outcome = ctx.refresh_if_due(false, ctx.settings.min_ttl)?;
    output::stdout(&format!("{}\n", outcome.login.access_token.expose()));
    Ok(0)
}
