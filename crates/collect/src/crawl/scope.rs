//! Which URLs a crawl follows, and which shard owns them.
//!
//! A crawl's *sites* are the hosts of its seeds and sitemaps, known when it
//! is planned. Every URL in scope belongs to one site: with `scope = "host"`
//! the site that is its host, with `scope = "domain"` the longest site its
//! host equals or is a subdomain of (`blog.example.com` belongs to
//! `example.com`), and with `scope = "any"` the single site `*`. A URL that
//! belongs to no site is out of scope. Allow patterns (any must match, when
//! given) and deny patterns (none may match) then filter the full URL text.
//!
//! Shards split a crawl by site: site `s` belongs to shard
//! `fnv1a64(s) mod count`, a hash fixed forever so that a plan means the
//! same on every worker and every version. A shard follows only links to
//! its own sites: a link to a site of another shard is left to that shard,
//! which reaches the page from its own seeds and links. A page of one site
//! reached only through links from another shard's site is therefore not
//! crawled; give each site a seed (or a sitemap). `scope = "any"` has one
//! site, hence one shard.

use regex::RegexSet;
use serde::Deserialize;
use url::Url;

/// How far a crawl may wander from its seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    /// Only the hosts of the seeds and sitemaps.
    #[default]
    Host,
    /// Those hosts and their subdomains.
    Domain,
    /// Any host the allow and deny patterns let through.
    Any,
}

/// The site of every URL under `scope = "any"`.
const ANY_SITE: &str = "*";

/// The rules that decide whether a URL is followed.
#[derive(Debug, Clone)]
pub struct Scope {
    mode: ScopeMode,
    /// Lowercase hosts, longest first so that the most specific site wins.
    sites: Vec<String>,
    allow: Option<RegexSet>,
    deny: RegexSet,
}

impl Scope {
    /// A scope over the hosts of `roots` (seeds and sitemaps).
    pub fn new<'a>(
        mode: ScopeMode,
        roots: impl IntoIterator<Item = &'a Url>,
        allow: Option<RegexSet>,
        deny: RegexSet,
    ) -> Self {
        let mut sites: Vec<String> = match mode {
            ScopeMode::Any => vec![ANY_SITE.to_string()],
            ScopeMode::Host | ScopeMode::Domain => {
                roots.into_iter().filter_map(Url::host_str).map(str::to_string).collect()
            }
        };
        sites.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        sites.dedup();
        Scope { mode, sites, allow, deny }
    }

    /// Every site, in a fixed order.
    pub fn sites(&self) -> &[String] {
        &self.sites
    }

    /// The site `url` belongs to, or `None` when it is out of scope.
    pub fn site_of(&self, url: &Url) -> Option<&str> {
        let host = url.host_str()?;
        let site = match self.mode {
            ScopeMode::Any => self.sites.first(),
            ScopeMode::Host => self.sites.iter().find(|site| *site == host),
            ScopeMode::Domain => self.sites.iter().find(|site| {
                host == site.as_str() || host.strip_suffix(site.as_str()).is_some_and(|rest| rest.ends_with('.'))
            }),
        };
        site.map(String::as_str)
    }

    /// Whether the allow and deny patterns let `url` through.
    pub fn patterns_allow(&self, url: &Url) -> bool {
        let text = url.as_str();
        self.allow.as_ref().is_none_or(|allow| allow.is_match(text)) && !self.deny.is_match(text)
    }
}

/// A shard's share of the sites: those whose hash is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct SiteShare {
    pub index: u32,
    pub count: u32,
}

impl SiteShare {
    /// Whether `site` belongs to this share.
    pub fn owns(&self, site: &str) -> bool {
        shard_of(site, self.count) == self.index
    }
}

/// The shard of `site` among `count`.
pub fn shard_of(site: &str, count: u32) -> u32 {
    (fnv1a64(site.as_bytes()) % u64::from(count.max(1))) as u32
}

/// The 64-bit FNV-1a hash: tiny, fixed by its specification, well spread over host names.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(texts: &[&str]) -> Vec<Url> {
        texts.iter().map(|text| Url::parse(text).unwrap()).collect()
    }

    fn scope(mode: ScopeMode, roots: &[&str]) -> Scope {
        Scope::new(mode, &urls(roots), None, RegexSet::empty())
    }

    fn site<'a>(scope: &'a Scope, url: &str) -> Option<&'a str> {
        scope.site_of(&Url::parse(url).unwrap())
    }

    #[test]
    fn host_scope_keeps_to_the_seed_hosts() {
        let scope = scope(ScopeMode::Host, &["http://example.com/", "http://docs.example.com/start"]);
        assert_eq!(site(&scope, "http://example.com/a"), Some("example.com"));
        assert_eq!(site(&scope, "https://docs.example.com/b"), Some("docs.example.com"));
        assert_eq!(site(&scope, "http://blog.example.com/"), None);
        assert_eq!(site(&scope, "http://notexample.com/"), None);
    }

    #[test]
    fn domain_scope_takes_the_most_specific_site() {
        let scope = scope(ScopeMode::Domain, &["http://example.com/", "http://docs.example.com/start"]);
        assert_eq!(site(&scope, "http://blog.example.com/"), Some("example.com"));
        assert_eq!(site(&scope, "http://v2.docs.example.com/"), Some("docs.example.com"));
        assert_eq!(site(&scope, "http://notexample.com/"), None);
    }

    #[test]
    fn any_scope_is_one_site() {
        let scope = scope(ScopeMode::Any, &["http://example.com/"]);
        assert_eq!(scope.sites(), ["*"]);
        assert_eq!(site(&scope, "http://elsewhere.org/"), Some("*"));
    }

    #[test]
    fn patterns_filter_the_whole_url() {
        let allow = RegexSet::new([r"/docs/", r"/blog/"]).unwrap();
        let deny = RegexSet::new([r"\?print=1", r"/blog/drafts/"]).unwrap();
        let scope = Scope::new(ScopeMode::Host, &urls(&["http://e.com/"]), Some(allow), deny);
        let allowed = |text| scope.patterns_allow(&Url::parse(text).unwrap());
        assert!(allowed("http://e.com/docs/a"));
        assert!(allowed("http://e.com/blog/b"));
        assert!(!allowed("http://e.com/shop/c"));
        assert!(!allowed("http://e.com/docs/a?print=1"));
        assert!(!allowed("http://e.com/blog/drafts/x"));
    }

    #[test]
    fn shares_partition_the_sites() {
        let sites: Vec<String> = (0..200).map(|i| format!("host{i}.example")).collect();
        for count in [1, 2, 3, 7] {
            for site in &sites {
                let owners = (0..count).filter(|index| SiteShare { index: *index, count }.owns(site)).count();
                assert_eq!(owners, 1, "{site} among {count}");
            }
        }
        // fixed forever: a plan stored by one version is read the same by the next
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
