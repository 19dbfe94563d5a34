//! A small path-tracking reader over `serde_json::Value` that collects every diagnostic instead of stopping at the first.
//!
//! Readers return `Option`: `None` means "absent" or "wrong, and already reported", so the caller
//! falls back to the default and carries on reading the remaining fields.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration;
use crate::{ConfigErrors, Diagnostic, Parsed};

/// How many errors (and, separately, warnings) are kept before the rest are only counted.
const MAX_REPORTED: usize = 100;

/// The longest string shown back in a message, in characters.
const MAX_SHOWN_CHARS: usize = 40;

/// Errors and warnings gathered while reading one document.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    dropped_errors: usize,
    dropped_warnings: usize,
}

impl Diags {
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(Diagnostic { path: path.to_owned(), message: message.into() });
        } else {
            self.dropped_errors += 1;
        }
    }

    pub(crate) fn warn(&mut self, path: &str, message: impl Into<String>) {
        if self.warnings.len() < MAX_REPORTED {
            self.warnings.push(Diagnostic { path: path.to_owned(), message: message.into() });
        } else {
            self.dropped_warnings += 1;
        }
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Turns the gathered diagnostics into the parse result: `value` if there were no errors.
    pub(crate) fn finish<T>(self, value: T) -> Result<Parsed<T>, ConfigErrors> {
        if self.has_errors() {
            Err(self.into_errors())
        } else {
            let (_, warnings) = self.into_parts();
            Ok(Parsed { value, warnings })
        }
    }

    pub(crate) fn into_errors(self) -> ConfigErrors {
        let (errors, warnings) = self.into_parts();
        ConfigErrors { errors, warnings }
    }

    fn into_parts(mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        if self.dropped_errors > 0 {
            let message = format!("{} more errors not shown; fix the ones above first", self.dropped_errors);
            self.errors.push(Diagnostic { path: String::new(), message });
        }
        if self.dropped_warnings > 0 {
            let message = format!("{} more warnings not shown", self.dropped_warnings);
            self.warnings.push(Diagnostic { path: String::new(), message });
        }
        (self.errors, self.warnings)
    }
}

/// The path of `key` inside the object at `parent`.
pub(crate) fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::String(key.to_owned())),
    }
}

/// The path of element `index` of the array at `parent`.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Shows a JSON value briefly, as it would appear in the file.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Quotes a string as JSON would, shortened when long.
pub(crate) fn quote(s: &str) -> String {
    if s.chars().count() <= MAX_SHOWN_CHARS {
        Value::String(s.to_owned()).to_string()
    } else {
        let head: String = s.chars().take(MAX_SHOWN_CHARS).collect();
        let quoted = Value::String(head).to_string();
        format!("{}...\"", &quoted[..quoted.len() - 1])
    }
}

/// The kind of a JSON value, for messages that must not echo the value itself.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The candidate closest to `word` within edit distance 2, ignoring case.
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let word = word.to_lowercase();
    let word_len = word.chars().count();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), *c))
        // A two-letter word is within distance 2 of every short key, which would be no hint at all.
        .filter(|(distance, _)| *distance <= 2 && *distance < word_len)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// The Levenshtein distance between two strings, counted in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Whether `name` is a valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The lower bound a duration must respect.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MinDuration {
    /// Zero is allowed.
    Zero,
    /// Zero is not allowed.
    Positive,
    /// At least this long.
    AtLeast(Duration),
}

/// An integer type a field can be read as; `MAX` is its largest value.
pub(crate) trait Int: TryFrom<u64> {
    const MAX: u64;
}

impl Int for u16 {
    const MAX: u64 = u16::MAX as u64;
}

impl Int for u32 {
    const MAX: u64 = u32::MAX as u64;
}

impl Int for u64 {
    const MAX: u64 = u64::MAX;
}

impl Int for usize {
    const MAX: u64 = if usize::BITS >= 64 { u64::MAX } else { usize::MAX as u64 };
}

/// One JSON object being read: it remembers which keys were asked for, so the rest can be reported.
#[derive(Debug)]
pub(crate) struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(path: String, map: &'a Map<String, Value>) -> Self {
        Self { path, map, known: Vec::new() }
    }

    /// The path of `key` in this object.
    pub(crate) fn key_path(&self, key: &str) -> String {
        child_path(&self.path, key)
    }

    /// The value at `key`; `None` when absent or `null`, which both mean "use the default".
    pub(crate) fn field(&mut self, key: &'static str) -> Option<Field<'a>> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Field { path: self.key_path(key), value }),
        }
    }

    /// Reports a required key that is absent.
    pub(crate) fn missing(&self, key: &str, diags: &mut Diags, how: &str) {
        diags.error(&self.key_path(key), format!("missing required key; {how}"));
    }

    pub(crate) fn bool(&mut self, key: &'static str, diags: &mut Diags) -> Option<bool> {
        self.field(key)?.bool(diags)
    }

    pub(crate) fn int<T: Int>(&mut self, key: &'static str, diags: &mut Diags, min: u64, max: u64) -> Option<T> {
        self.field(key)?.int(diags, min, max)
    }

    pub(crate) fn float(&mut self, key: &'static str, diags: &mut Diags) -> Option<f64> {
        self.field(key)?.float(diags)
    }

    pub(crate) fn duration(&mut self, key: &'static str, diags: &mut Diags, min: MinDuration) -> Option<Duration> {
        self.field(key)?.duration(diags, min)
    }

    pub(crate) fn object(&mut self, key: &'static str, diags: &mut Diags) -> Option<Obj<'a>> {
        self.field(key)?.object(diags)
    }

    /// Warns about every key that was never asked for.
    ///
    /// `hints` maps keys that belong elsewhere to where they belong, relative to this object.
    pub(crate) fn finish(self, diags: &mut Diags, hints: &[(&str, &str)]) {
        for key in self.map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let path = self.key_path(key);
            let hint = hints
                .iter()
                .find(|(from, _)| from == key)
                .map(|(_, to)| to.split('.').fold(self.path.clone(), |path, key| child_path(&path, key)))
                .or_else(|| closest(key, &self.known).map(|k| self.key_path(k)));
            match hint {
                Some(hint) => diags.warn(&path, format!("unknown key, ignored; did you mean `{hint}`?")),
                None => diags.warn(&path, "unknown key, ignored"),
            }
        }
    }
}

/// One present, non-null JSON value and its path.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    pub(crate) path: String,
    pub(crate) value: &'a Value,
}

impl<'a> Field<'a> {
    /// Reports that the value is not what was expected, showing what was found.
    pub(crate) fn expected(&self, diags: &mut Diags, what: &str) {
        diags.error(&self.path, format!("expected {what}, found {}", describe(self.value)));
    }

    /// Reports an error about this value.
    pub(crate) fn error(&self, diags: &mut Diags, message: impl Into<String>) {
        diags.error(&self.path, message);
    }

    pub(crate) fn bool(&self, diags: &mut Diags) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" || s == "false" => {
                self.error(diags, format!("expected true or false, found {}; remove the quotes", quote(s)));
                None
            }
            _ => {
                self.expected(diags, "true or false");
                None
            }
        }
    }

    /// Reads a whole number from `min` to `max` (inclusive).
    pub(crate) fn int<T: Int>(&self, diags: &mut Diags, min: u64, max: u64) -> Option<T> {
        let max = max.min(T::MAX);
        // A bound that only comes from the type (or is too large to matter) is named only when exceeded.
        let deliberate = max < u64::from(u32::MAX);
        let range =
            if deliberate { format!("a number from {min} to {max}") } else { format!("a number of at least {min}") };
        match self.value {
            Value::Number(n) => {
                let whole = n.as_u64().or_else(|| {
                    n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64).map(|f| f as u64)
                });
                match whole {
                    Some(v) if (min..=max).contains(&v) => T::try_from(v).ok(),
                    Some(v) if v > max => {
                        self.expected(diags, &format!("a number from {min} to {max}"));
                        None
                    }
                    Some(_) => {
                        self.expected(diags, &range);
                        None
                    }
                    None if n.as_i64().is_some() => {
                        self.expected(diags, &range);
                        None
                    }
                    None => {
                        self.error(diags, format!("expected {range}, found {n}; use a whole number"));
                        None
                    }
                }
            }
            Value::String(s) if !s.is_empty() && s.trim().parse::<f64>().is_ok() => {
                self.error(diags, format!("expected {range}, found {}; remove the quotes", quote(s)));
                None
            }
            _ => {
                self.expected(diags, &range);
                None
            }
        }
    }

    /// Reads a finite number that is zero or more.
    pub(crate) fn float(&self, diags: &mut Diags) -> Option<f64> {
        match self.value {
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => Some(f),
                _ => {
                    self.expected(diags, "a number of at least 0");
                    None
                }
            },
            Value::String(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                self.error(diags, format!("expected a number of at least 0, found {}; remove the quotes", quote(s)));
                None
            }
            _ => {
                self.expected(diags, "a number of at least 0");
                None
            }
        }
    }

    pub(crate) fn str(&self, diags: &mut Diags) -> Option<&'a str> {
        match self.value {
            Value::String(s) => Some(s),
            _ => {
                self.expected(diags, "a string");
                None
            }
        }
    }

    /// Reads a string without echoing a wrong value back, for secrets.
    pub(crate) fn secret_str(&self, diags: &mut Diags) -> Option<&'a str> {
        match self.value {
            Value::String(s) => Some(s),
            other => {
                self.error(diags, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    /// Reads one of a fixed set of strings, suggesting the closest when it is misspelt.
    pub(crate) fn choice(&self, diags: &mut Diags, options: &[&'static str]) -> Option<&'static str> {
        let list = one_of(options);
        match self.value {
            Value::String(s) => {
                if let Some(found) = options.iter().find(|o| **o == s.as_str()) {
                    return Some(found);
                }
                let mut message = format!("expected {list}, found {}", quote(s));
                if let Some(near) = closest(s, options) {
                    message.push_str(&format!("; did you mean \"{near}\"?"));
                }
                self.error(diags, message);
                None
            }
            _ => {
                self.expected(diags, &list);
                None
            }
        }
    }

    pub(crate) fn duration(&self, diags: &mut Diags, min: MinDuration) -> Option<Duration> {
        let parsed = match self.value {
            Value::Number(n) => duration::from_json_number(n),
            Value::String(s) => duration::parse(s),
            _ => Err(None),
        };
        let value = match parsed {
            Ok(value) => value,
            Err(hint) => {
                let mut message = format!("{}, found {}", duration::EXPECTED, describe(self.value));
                if let Some(hint) = hint {
                    message.push_str("; ");
                    message.push_str(hint);
                }
                self.error(diags, message);
                return None;
            }
        };
        let bound = match min {
            MinDuration::Zero => None,
            MinDuration::Positive if value.is_zero() => Some("a duration greater than zero".to_owned()),
            MinDuration::AtLeast(least) if value < least => {
                Some(format!("a duration of at least {}", duration::format(least)))
            }
            MinDuration::Positive | MinDuration::AtLeast(_) => None,
        };
        match bound {
            Some(what) => {
                self.expected(diags, &what);
                None
            }
            None => Some(value),
        }
    }

    /// The elements of an array, each with its own path.
    pub(crate) fn array(&self, diags: &mut Diags) -> Option<Vec<Field<'a>>> {
        match self.value {
            Value::Array(items) => Some(
                items.iter().enumerate().map(|(i, value)| Field { path: index_path(&self.path, i), value }).collect(),
            ),
            _ => {
                self.expected(diags, "an array");
                None
            }
        }
    }

    pub(crate) fn object(&self, diags: &mut Diags) -> Option<Obj<'a>> {
        match self.value {
            Value::Object(map) => Some(Obj::new(self.path.clone(), map)),
            _ => {
                self.expected(diags, "an object");
                None
            }
        }
    }
}

/// Lists options as `"a", "b" or "c"`.
pub(crate) fn one_of(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
    match quoted.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}
