//! URL normalisation: the one form under which the frontier knows a page.
//!
//! Parsing with the `url` crate already lowercases the scheme and the host,
//! drops a default port, resolves `.` and `..` segments and percent-encodes
//! what must be. On top of that a normalised URL has no fragment, no empty
//! `?`, an `http` or `https` scheme, and optionally its query pairs sorted
//! (by their raw text, so their encoding is kept), so that `?b=2&a=1` and
//! `?a=1&b=2` are one page.

use url::Url;

/// How URLs are normalised; one value per crawl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalizer {
    /// Sort query pairs, for sites where their order carries no meaning.
    pub sort_query: bool,
}

impl Normalizer {
    /// An absolute URL (a seed, a sitemap entry) in normal form.
    pub fn absolute(&self, text: &str) -> Result<Url, String> {
        let url = Url::parse(text.trim()).map_err(|error| format!("`{text}` is not a valid url: {error}"))?;
        self.normalized(url).ok_or_else(|| format!("`{text}` is not an http or https url"))
    }

    /// A link found on a page, resolved against the page's base URL; `None`
    /// when it does not lead to an http(s) page (`mailto:`, `javascript:`, junk).
    pub fn link(&self, base: &Url, href: &str) -> Option<Url> {
        self.normalized(base.join(href.trim()).ok()?)
    }

    /// `url` in normal form, or `None` when it is not an http(s) URL with a host.
    pub fn normalized(&self, mut url: Url) -> Option<Url> {
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return None;
        }
        url.set_fragment(None);
        match url.query() {
            Some("") => url.set_query(None),
            Some(query) if self.sort_query => {
                let sorted = sorted_query(query);
                url.set_query(if sorted.is_empty() { None } else { Some(&sorted) });
            }
            _ => {}
        }
        Some(url)
    }
}

/// The query's `&`-separated pairs sorted by key, then by their text; empty pairs dropped.
fn sorted_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|pair| !pair.is_empty()).collect();
    pairs.sort_by(|a, b| {
        let key = |pair: &'_ str| pair.split_once('=').map_or(pair, |(key, _)| key).to_string();
        key(a).cmp(&key(b)).then_with(|| a.cmp(b))
    });
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PLAIN: Normalizer = Normalizer { sort_query: false };
    const SORTING: Normalizer = Normalizer { sort_query: true };

    #[test]
    fn canonical_forms() {
        let cases = [
            ("HTTP://Example.COM:80/a/./b/../c#top", "http://example.com/a/c"),
            ("https://example.com:443", "https://example.com/"),
            ("https://example.com:8443/x?", "https://example.com:8443/x"),
            ("http://example.com/p?b=2&a=1#f", "http://example.com/p?b=2&a=1"),
        ];
        for (input, expected) in cases {
            assert_eq!(PLAIN.absolute(input).unwrap().as_str(), expected, "{input}");
        }
        assert_eq!(SORTING.absolute("http://e.com/p?b=2&a=1&a=0&&").unwrap().as_str(), "http://e.com/p?a=0&a=1&b=2");
        assert_eq!(SORTING.absolute("http://e.com/p?&&").unwrap().as_str(), "http://e.com/p");
    }

    #[test]
    fn links_resolve_against_their_page() {
        let base = Url::parse("http://example.com/docs/intro.html").unwrap();
        assert_eq!(PLAIN.link(&base, "next.html#part").unwrap().as_str(), "http://example.com/docs/next.html");
        assert_eq!(PLAIN.link(&base, "../index.html").unwrap().as_str(), "http://example.com/index.html");
        assert_eq!(PLAIN.link(&base, "//Other.org/x").unwrap().as_str(), "http://other.org/x");
        assert_eq!(PLAIN.link(&base, " #top ").unwrap().as_str(), "http://example.com/docs/intro.html");
        for unusable in ["mailto:a@b.c", "javascript:void(0)", "ftp://example.com/f", "http://"] {
            assert_eq!(PLAIN.link(&base, unusable), None, "{unusable}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_web_page() {
        assert!(PLAIN.absolute("not a url").unwrap_err().contains("not a valid url"));
        assert!(PLAIN.absolute("file:///etc/passwd").unwrap_err().contains("not an http or https url"));
    }

    fn url_text() -> impl Strategy<Value = String> {
        let scheme = prop_oneof!["http", "https", "HTTP", "HttpS"];
        let host = "[a-zA-Z][a-zA-Z0-9]{0,6}(\\.[a-zA-Z]{2,3})?";
        let port =
            prop_oneof![Just(String::new()), Just(":80".to_string()), Just(":443".to_string()), "(:[1-9][0-9]{3})"];
        let path = "(/[a-zA-Z0-9._%~-]{0,5}){0,4}";
        let query = prop_oneof![Just(String::new()), "\\?([a-c]{1,2}=[0-9a-z%]{0,3}&?){0,4}"];
        let fragment = prop_oneof![Just(String::new()), "#[a-z0-9]{0,4}"];
        (scheme, host, port, path, query, fragment).prop_map(|(scheme, host, port, path, query, fragment)| {
            format!("{scheme}://{host}{port}{path}{query}{fragment}")
        })
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(text in url_text(), sort_query in any::<bool>()) {
            let normalizer = Normalizer { sort_query };
            let once = normalizer.absolute(&text).unwrap();
            let twice = normalizer.absolute(once.as_str()).unwrap();
            prop_assert_eq!(&once, &twice);
            prop_assert_eq!(once.fragment(), None);
            prop_assert_ne!(once.query(), Some(""));
            prop_assert_eq!(once.scheme(), once.scheme().to_ascii_lowercase());
            let host = once.host_str().unwrap();
            prop_assert_eq!(host, host.to_ascii_lowercase());
            let default_port = if once.scheme() == "http" { ":80/" } else { ":443/" };
            prop_assert!(!once.as_str().contains(default_port), "{} keeps its default port", once);
        }

        #[test]
        fn query_order_does_not_matter_when_sorted(text in url_text(), seed in any::<u64>()) {
            let url = SORTING.absolute(&text).unwrap();
            if let Some(query) = url.query() {
                let mut pairs: Vec<&str> = query.split('&').collect();
                let len = pairs.len();
                pairs.rotate_left((seed as usize) % len.max(1));
                let mut shuffled = url.clone();
                shuffled.set_query(Some(&pairs.join("&")));
                prop_assert_eq!(SORTING.normalized(shuffled).unwrap(), url);
            }
        }

        #[test]
        fn a_relative_link_is_the_page_it_names(text in url_text(), path in "[a-z]{1,4}(/[a-z]{1,4}){0,2}") {
            let base = PLAIN.absolute(&text).unwrap();
            let relative = PLAIN.link(&base, &path).unwrap();
            let absolute = PLAIN.absolute(base.join(&path).unwrap().as_str()).unwrap();
            prop_assert_eq!(relative, absolute);
        }
    }
}
