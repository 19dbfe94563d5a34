//! Durations as written in config files: a number of seconds, or a string with a unit such as `"250ms"`.

use std::time::Duration;

use serde_json::Number;

/// What a duration must look like, for error messages.
pub(crate) const EXPECTED: &str =
    r#"expected a duration (seconds as a number such as 5 or 0.5, or a string such as "250ms", "5s", "2m" or "1h")"#;

/// Why a duration was rejected: `None` when the expected form says it all, else a hint to add.
pub(crate) type Rejection = Option<&'static str>;

/// Reads a JSON number as seconds; fractions are allowed, negative numbers are not.
pub(crate) fn from_json_number(n: &Number) -> Result<Duration, Rejection> {
    if let Some(secs) = n.as_u64() {
        return Ok(Duration::from_secs(secs));
    }
    match n.as_f64() {
        Some(secs) => from_secs_f64(secs),
        None => Err(None),
    }
}

/// Parses `"5"`, `"1.5s"`, `"250ms"`, `"2m"` or `"1h"`; a space between number and unit is allowed.
pub(crate) fn parse(text: &str) -> Result<Duration, Rejection> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(negative());
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim_start();
    let scale: u64 = match unit {
        "ms" => 0,
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(Some(r#"the unit must be "ms", "s", "m" or "h""#));
        }
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(None);
    }
    if fraction.is_none() {
        let n: u64 = whole.parse().map_err(|_| too_long())?;
        return match scale {
            0 => Ok(Duration::from_millis(n)),
            _ => n.checked_mul(scale).map(Duration::from_secs).ok_or_else(too_long),
        };
    }
    let n: f64 = number.parse().map_err(|_| None)?;
    let secs = match scale {
        0 => n / 1000.0,
        _ => n * scale as f64,
    };
    from_secs_f64(secs)
}

fn from_secs_f64(secs: f64) -> Result<Duration, Rejection> {
    if secs < 0.0 {
        return Err(negative());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| too_long())
}

fn negative() -> Rejection {
    Some("durations cannot be negative")
}

fn too_long() -> Rejection {
    Some("this one is too long to represent")
}

/// Writes a duration the way a user would, in the largest unit that divides it: `"250ms"`, `"30s"`, `"2m"`.
pub(crate) fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    const MS: u128 = 1_000_000;
    match nanos {
        0 => "0s".to_owned(),
        n if n % (3600 * 1000 * MS) == 0 => format!("{}h", n / (3600 * 1000 * MS)),
        n if n % (60 * 1000 * MS) == 0 => format!("{}m", n / (60 * 1000 * MS)),
        n if n % (1000 * MS) == 0 => format!("{}s", n / (1000 * MS)),
        n if n % MS == 0 => format!("{}ms", n / MS),
        _ => format!("{d:?}"),
    }
}
