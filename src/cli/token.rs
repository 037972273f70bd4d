//! `tokenkeeper token`: a valid access token on stdout and nothing else, for scripts.

use super::Context;
use super::output;
use crate::Error;

pub fn run(ctx: &Context) -> Result<u8, Error> {
    let outcome = output::usable(ctx.login_for_use(ctx.settings.min_ttl)?);
    output::stdout(&format!("{}\n", outcome.login.access_token.expose()));
    Ok(0)
}
