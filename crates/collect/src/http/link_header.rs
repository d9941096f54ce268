//! The RFC 8288 `Link` header: `<https://api/items?page=3>; rel="next", …`.

/// The target of the first link whose relation types include `rel`
/// (case-insensitive), across all the `Link` header values given.
pub(crate) fn find_link<'h>(values: impl IntoIterator<Item = &'h str>, rel: &str) -> Option<String> {
    values
        .into_iter()
        .flat_map(parse_links)
        .find(|link| link.rels.iter().any(|r| r.eq_ignore_ascii_case(rel)))
        .map(|link| link.target)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub target: String,
    pub rels: Vec<String>,
}

/// Every link of one header value; malformed parts are skipped.
pub(crate) fn parse_links(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(after) = rest.strip_prefix('<') else { return links };
        let Some(end) = after.find('>') else { return links };
        let target = after[..end].trim().to_string();
        rest = &after[end + 1..];
        let mut rels = Vec::new();
        // Parameters: `; name=value` or `; name="quoted, value"`, up to the next top-level comma.
        loop {
            rest = rest.trim_start();
            let Some(after) = rest.strip_prefix(';') else { break };
            let after = after.trim_start();
            let name_end = after.find(['=', ';', ',']).unwrap_or(after.len());
            let name = after[..name_end].trim().to_ascii_lowercase();
            rest = &after[name_end..];
            let mut parameter_value = String::new();
            if let Some(after) = rest.strip_prefix('=') {
                let after = after.trim_start();
                if let Some(quoted) = after.strip_prefix('"') {
                    let (text, remaining) = read_quoted(quoted);
                    parameter_value = text;
                    rest = remaining;
                } else {
                    let end = after.find([';', ',']).unwrap_or(after.len());
                    parameter_value = after[..end].trim().to_string();
                    rest = &after[end..];
                }
            }
            if name == "rel" {
                rels.extend(parameter_value.split_ascii_whitespace().map(str::to_string));
            }
        }
        links.push(Link { target, rels });
        // Skip anything malformed up to the next link.
        match rest.find(',') {
            Some(comma) if !rest.trim_start().starts_with('<') => rest = &rest[comma..],
            _ => {}
        }
    }
}

/// A quoted string's text (after the opening quote) and what follows its closing quote.
fn read_quoted(text: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return (out, &text[index + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            c => out.push(c),
        }
    }
    (out, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_next_among_others() {
        let header = r#"<https://api.test/items?page=1>; rel="first", <https://api.test/items?page=3&a=1,2>; rel="next"; title="x, y", <https://api.test/items?page=9>; rel=last"#;
        assert_eq!(find_link([header], "next").as_deref(), Some("https://api.test/items?page=3&a=1,2"));
        assert_eq!(find_link([header], "LAST").as_deref(), Some("https://api.test/items?page=9"));
        assert_eq!(find_link([header], "prev"), None);
    }

    #[test]
    fn relation_lists_and_several_headers() {
        assert_eq!(find_link(["</a>; rel=\"prev\"", "</b>; rel=\"last next\""], "next").as_deref(), Some("/b"));
        assert_eq!(find_link(["garbage", "</c>;rel=next"], "next").as_deref(), Some("/c"));
        assert_eq!(find_link([""], "next"), None);
    }

    proptest! {
        #[test]
        fn never_panics(text in ".*") {
            let _ = parse_links(&text);
        }

        #[test]
        fn formatted_links_read_back(targets in proptest::collection::vec(("[a-z0-9/?=&,;]{1,12}", "[a-z]{1,6}"), 1..5)) {
            let header: Vec<String> = targets.iter().map(|(target, rel)| format!("<{target}>; rel=\"{rel}\"; title=\"a, b\"")).collect();
            let links = parse_links(&header.join(", "));
            let expected: Vec<Link> = targets.iter().map(|(target, rel)| Link { target: target.clone(), rels: vec![rel.clone()] }).collect();
            prop_assert_eq!(links, expected);
        }
    }
}
