//! Durations as people write them on a command line or in the config file (`90s`, `30m`, `1h`,
//! `1h30m`), and as tokenkeeper shows them back (`6h 12m`).

use std::time::Duration;

/// Parses `90s`, `30m`, `1h`, `1h30m`, `2d`, `500ms` (spaces allowed between parts). A bare
/// number is refused: seconds or minutes? (jiff's duration parser has no days, which a login's
/// 30-day life is counted in.)
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let unclear = || format!("'{t}' is not a duration; write it like 90s, 30m, 1h or 3d");
    if t.is_empty() {
        return Err("empty duration; write it like 90s, 30m or 1h".into());
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "'{t}' has no unit; write it like {t}s, {t}m or {t}h"
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| unclear())?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let out_of_range = || format!("'{t}' is out of range");
        let secs = |per: u64| {
            n.checked_mul(per)
                .map(Duration::from_secs)
                .ok_or_else(out_of_range)
        };
        let part = match &rest[..letters] {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" | "second" | "seconds" => secs(1)?,
            "m" | "min" | "mins" | "minute" | "minutes" => secs(60)?,
            "h" | "hr" | "hrs" | "hour" | "hours" => secs(3600)?,
            "d" | "day" | "days" => secs(86_400)?,
            _ => return Err(unclear()),
        };
        total = total.checked_add(part).ok_or_else(out_of_range)?;
        rest = rest[letters..].trim_start();
    }
    Ok(total)
}

/// `6h 12m`, `3d 4h`, `45s`: the two largest units, for people.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) if secs == 0 || m >= 10 => format!("{m}m"),
        (0, 0, m) => format!("{m}m {secs}s"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `in 6h 12m` or `5m ago`, from a signed number of milliseconds.
pub fn relative(ms: i64) -> String {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        format!("in {}", human(d))
    } else {
        format!("{} ago", human(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn refuses_unclear_input() {
        assert!(parse("90").unwrap_err().contains("no unit"));
        assert!(parse("").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("-5m").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("h").is_err());
        assert!(parse("99999999999999999999d").is_err());
    }

    #[test]
    fn human_shows_two_units() {
        assert_eq!(human(Duration::from_secs(6 * 3600 + 12 * 60 + 5)), "6h 12m");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
        assert_eq!(relative(-300_000), "5m ago");
        assert_eq!(relative(i64::MIN), relative(i64::MIN)); // no overflow
    }
}
