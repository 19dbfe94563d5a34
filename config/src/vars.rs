//! `${NAME}` expansion in server environment values, from host variables the host config allows.

use crate::reader::{is_env_name, quote};

/// Expands every `${NAME}` in `input` with `lookup(NAME)`; `$$` is a literal `$`.
///
/// The caller's `lookup` answers only for host variables listed in `mcp_hosting.env_allowlist` (and
/// set), so a hosted server never sees the host's other secrets. Expanded text is inserted as is: it is
/// not expanded again.
///
/// Errors, as a message naming the problem and its fix:
/// - a name `lookup` does not know (not allowed, or not set);
/// - a malformed reference: `${` without `}`, an empty name, or a name that is not
///   `[A-Za-z_][A-Za-z0-9_]*`;
/// - `$NAME` without braces, which is ambiguous: write `${NAME}` to expand or `$$NAME` for the text.
///
/// A `$` followed by anything else (a digit, a space, the end) is kept as a literal `$`.
pub fn expand_vars(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(close) = tail.find('}') else {
                return Err("unclosed `${`: add the closing `}`, or write `$$` for a literal `$`".to_owned());
            };
            let name = &tail[..close];
            if name.is_empty() {
                return Err(
                    "empty variable reference `${}`: put a name inside, as in `${HOME}`, or write `$$` for a literal `$`"
                        .to_owned(),
                );
            }
            if !is_env_name(name) {
                return Err(format!(
                    "invalid variable name {} in `${{...}}`: use letters, digits and `_`, not starting with a digit",
                    quote(name)
                ));
            }
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(format!(
                        "host variable `{name}` is not available to servers: add it to mcp_hosting.env_allowlist and set it in hivehost's environment"
                    ));
                }
            }
            rest = &tail[close + 1..];
        } else if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            return Err(format!(
                "`${name}` needs braces: write `${{{name}}}` to expand a host variable, or `$${name}` for the literal text"
            ));
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}
