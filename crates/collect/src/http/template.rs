//! Templates in the `http` source's URL, query, headers and body: text with
//! `{from}`, `{to}` (a range shard's window), `{since}` (the incremental
//! high-water mark) and `{partition}` placeholders, and `${env:NAME}`
//! references resolved from the environment on first use. `{{` and `}}` are
//! literal braces.
//!
//! Environment values are substituted before placeholders are filled, and
//! placeholder values (which come from the API's own data) are never read
//! for `${env:…}`, so a response cannot make the source reveal a variable.

use std::fmt;

use anyhow::{Context, bail};
use haul_common::env::interpolate_secret;
use secrecy::{ExposeSecret, SecretString};

/// A value a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    From,
    To,
    Since,
    Partition,
}

impl Var {
    const ALL: [(&'static str, Var); 4] =
        [("from", Var::From), ("to", Var::To), ("since", Var::Since), ("partition", Var::Partition)];

    fn name(self) -> &'static str {
        Var::ALL.iter().find(|(_, var)| *var == self).map_or("?", |(name, _)| name)
    }
}

/// The placeholder values of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Vars {
    pub from: Option<String>,
    pub to: Option<String>,
    pub since: Option<String>,
    pub partition: Option<String>,
}

impl Vars {
    fn get(&self, var: Var) -> Option<&str> {
        match var {
            Var::From => self.from.as_deref(),
            Var::To => self.to.as_deref(),
            Var::Since => self.since.as_deref(),
            Var::Partition => self.partition.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// Literal text, possibly holding `${env:NAME}` references.
    Text(String),
    Var(Var),
}

/// A parsed template, not yet resolved against the environment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Template> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(index) = rest.find(['{', '}', '$']) {
            literal.push_str(&rest[..index]);
            let tail = &rest[index..];
            if let Some(after) = tail.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if let Some(after) = tail.strip_prefix("$${") {
                literal.push_str("$${");
                rest = after;
            } else if tail.starts_with("${") {
                // An environment reference stays in the text, whole.
                let end = tail.find('}').context("unterminated `${env:` reference")?;
                literal.push_str(&tail[..=end]);
                rest = &tail[end + 1..];
            } else if let Some(after) = tail.strip_prefix('{') {
                let end = after.find('}').with_context(|| format!("unclosed `{{` in `{text}`"))?;
                let name = &after[..end];
                let Some((_, var)) = Var::ALL.iter().find(|(known, _)| *known == name) else {
                    bail!(
                        "unknown placeholder `{{{name}}}` in `{text}`; expected one of {{from}}, {{to}}, {{since}}, \
                         {{partition}} (write `{{{{` for a literal brace)"
                    );
                };
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(*var));
                rest = &after[end + 1..];
            } else if tail.starts_with('}') {
                bail!("a lone `}}` in `{text}`; write `}}}}` for a literal brace");
            } else {
                literal.push('$');
                rest = &tail[1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() || parts.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template uses `var`.
    pub(crate) fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// Substitutes `${env:NAME}` references.
    pub(crate) fn resolve(&self) -> anyhow::Result<Resolved> {
        let mut secret = false;
        let parts = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Var(var) => Ok(ResolvedPart::Var(*var)),
                Part::Text(text) if text.contains("${") => {
                    secret = true;
                    Ok(ResolvedPart::Text(interpolate_secret(text)?))
                }
                Part::Text(text) => Ok(ResolvedPart::Text(SecretString::from(text.clone()))),
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Resolved { parts, secret })
    }
}

enum ResolvedPart {
    Text(SecretString),
    Var(Var),
}

/// A template with its environment references substituted.
pub(crate) struct Resolved {
    parts: Vec<ResolvedPart>,
    /// Whether it holds a value from the environment: such values are
    /// masked wherever requests are shown.
    pub(crate) secret: bool,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved").field("secret", &self.secret).finish_non_exhaustive()
    }
}

impl Resolved {
    /// The text with `vars` filled in; `Err(var)` names a placeholder without a value.
    pub(crate) fn render(&self, vars: &Vars) -> Result<String, Unset> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                ResolvedPart::Text(text) => out.push_str(text.expose_secret()),
                ResolvedPart::Var(var) => out.push_str(vars.get(*var).ok_or(Unset(*var))?),
            }
        }
        Ok(out)
    }
}

/// A placeholder used without a value in this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unset(pub Var);

impl fmt::Display for Unset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hint = match self.0 {
            Var::From | Var::To => "it has a value only in range mode",
            Var::Since => "it has a value only in incremental mode after a run that read records",
            Var::Partition => "it has a value only with `partitions`",
        };
        write!(f, "`{{{}}}` has no value: {hint}", self.0.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars() -> Vars {
        Vars { from: Some("2024-01-01".into()), to: Some("2024-01-02".into()), ..Vars::default() }
    }

    #[test]
    fn fills_placeholders_and_keeps_escapes() {
        let template = Template::parse("/items?from={from}&to={to}&raw={{x}}").unwrap();
        assert!(template.uses(Var::From) && !template.uses(Var::Since));
        let text = template.resolve().unwrap().render(&vars()).unwrap();
        assert_eq!(text, "/items?from=2024-01-01&to=2024-01-02&raw={x}");
        assert_eq!(Template::parse("{since}").unwrap().resolve().unwrap().render(&vars()), Err(Unset(Var::Since)));
    }

    #[test]
    fn environment_references_are_secret_and_never_read_from_values() {
        // Cargo sets CARGO_PKG_NAME for the tests it runs.
        let resolved = Template::parse("Bearer ${env:CARGO_PKG_NAME}").unwrap().resolve().unwrap();
        assert!(resolved.secret);
        assert_eq!(resolved.render(&Vars::default()).unwrap(), "Bearer haul-collect");
        assert!(!format!("{resolved:?}").contains("haul-collect"));
        let injected = Vars { since: Some("${env:CARGO_PKG_NAME}".into()), ..Vars::default() };
        let rendered = Template::parse("{since}").unwrap().resolve().unwrap().render(&injected).unwrap();
        assert_eq!(rendered, "${env:CARGO_PKG_NAME}");
        let missing = Template::parse("${env:HAUL_TEMPLATE_TEST_MISSING}").unwrap().resolve().unwrap_err();
        assert!(missing.to_string().contains("HAUL_TEMPLATE_TEST_MISSING"), "{missing}");
    }

    #[test]
    fn reports_bad_placeholders() {
        let error = Template::parse("/x/{form}").unwrap_err().to_string();
        assert!(error.contains("unknown placeholder `{form}`"), "{error}");
        assert!(Template::parse("/x/{from").unwrap_err().to_string().contains("unclosed"));
        assert!(Template::parse("a}b").unwrap_err().to_string().contains("lone `}`"));
    }

    proptest! {
        #[test]
        fn never_panics(text in ".*") {
            let _ = Template::parse(&text);
        }

        #[test]
        fn text_without_specials_renders_unchanged(text in "[^{}$]*") {
            let rendered = Template::parse(&text).unwrap().resolve().unwrap().render(&Vars::default()).unwrap();
            prop_assert_eq!(rendered, text);
        }
    }
}
