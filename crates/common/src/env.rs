//! `${env:NAME}` interpolation, the way credentials reach a job file without
//! being written in it. The result of interpolation is a [`SecretString`], so
//! a value that came from the environment is never printed by `Debug`.

use secrecy::SecretString;

/// A reference to an environment variable that is not set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterpolationError {
    #[error("environment variable `{0}` is not set")]
    Missing(String),
    #[error("unterminated `${{env:` reference")]
    Unterminated,
}

/// Replaces every `${env:NAME}` in `text` with the value of `NAME`, reading
/// variables through `lookup`. `$${` escapes a literal `${`.
pub fn interpolate_with(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${env:") {
            let end = after.find('}').ok_or(InterpolationError::Unterminated)?;
            let name = &after[..end];
            let value = lookup(name).ok_or_else(|| InterpolationError::Missing(name.to_string()))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Interpolates from the process environment into a secret.
pub fn interpolate_secret(text: &str) -> Result<SecretString, InterpolationError> {
    interpolate_with(text, |name| std::env::var(name).ok()).map(SecretString::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "PASSWORD").then(|| "s3cr3t".to_string())
    }

    #[test]
    fn replaces_references() {
        let url = interpolate_with("postgres://u:${env:PASSWORD}@h/db", lookup).unwrap();
        assert_eq!(url, "postgres://u:s3cr3t@h/db");
    }

    #[test]
    fn leaves_plain_dollars_and_unescapes() {
        assert_eq!(interpolate_with("a$b $${env:X}", lookup).unwrap(), "a$b ${env:X}");
    }

    #[test]
    fn reports_missing_and_unterminated() {
        assert_eq!(interpolate_with("${env:NOPE}", lookup), Err(InterpolationError::Missing("NOPE".into())));
        assert_eq!(interpolate_with("${env:PASSWORD", lookup), Err(InterpolationError::Unterminated));
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let secret = SecretString::from(interpolate_with("${env:PASSWORD}", lookup).unwrap());
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }
}
