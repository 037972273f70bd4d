//! `tokenkeeper token`: a valid access token on stdout and nothing else, for scripts.

use super::Context;
use super::output;
use tokenkeeper::Error;
use tokenkeeper::refresh::refresh_if_due;

pub fn run(ctx: &Context) -> Result<u8, Error> {
    let job = ctx.job();
    let outcome = refresh_if_due(&job, false, ctx.settings.min_ttl)?;
    output::stdout(&format!("{}\n", outcome.login.access_token.expose()));
    Ok(0)
}
