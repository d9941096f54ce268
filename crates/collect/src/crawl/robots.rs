//! robots.txt, read once per origin and obeyed for the crawler's own agent.
//!
//! The agent is the product token of the `user_agent` (`haul` for
//! `haul/0.1`); rules for it win over the `*` group. A robots.txt answered
//! with 2xx is obeyed, its `Crawl-delay` included; a 4xx answer (no file,
//! forbidden) allows everything, as every major crawler reads it. When the
//! file cannot be had (5xx or network errors after the client's retries),
//! the shard fails with a transient error rather than guess: the run
//! retries it from its checkpoint later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use texting_robots::Robot;
use url::Url;

use crate::web::{WebClient, WebRequest};

/// What one origin's robots.txt says.
#[derive(Debug)]
pub enum Rules {
    /// No rules: everything is allowed.
    AllowAll,
    Robot(Robot),
}

impl Rules {
    /// Reads a robots.txt response for `agent`.
    pub fn from_response(status: u16, body: &[u8], agent: &str) -> anyhow::Result<Rules> {
        match status {
            200..=299 => match Robot::new(agent, body) {
                Ok(robot) => Ok(Rules::Robot(robot)),
                Err(error) => {
                    tracing::warn!(error = %error, "robots.txt could not be parsed; treating it as allowing everything");
                    Ok(Rules::AllowAll)
                }
            },
            400..=499 => Ok(Rules::AllowAll),
            _ => bail!("robots.txt answered {status}; the site's rules are unknown"),
        }
    }

    pub fn allows(&self, url: &Url) -> bool {
        match self {
            Rules::AllowAll => true,
            Rules::Robot(robot) => robot.allowed(url.as_str()),
        }
    }

    /// The `Crawl-delay` for this agent, if any.
    pub fn crawl_delay(&self) -> Option<Duration> {
        match self {
            Rules::Robot(Robot { delay: Some(seconds), .. }) if seconds.is_finite() && *seconds > 0.0 => {
                Some(Duration::from_secs_f32(seconds.min(3600.0)))
            }
            _ => None,
        }
    }

    /// The sitemaps the file lists.
    pub fn sitemaps(&self) -> &[String] {
        match self {
            Rules::AllowAll => &[],
            Rules::Robot(robot) => &robot.sitemaps,
        }
    }
}

/// The rules of every origin met so far.
pub struct RobotsCache {
    agent: String,
    by_origin: HashMap<String, Arc<Rules>>,
}

impl RobotsCache {
    /// A cache reading rules for the product token of `user_agent`.
    pub fn new(user_agent: &str) -> Self {
        let agent = user_agent.split(['/', ' ']).next().unwrap_or(user_agent).to_string();
        RobotsCache { agent, by_origin: HashMap::new() }
    }

    /// The rules of `url`'s origin, fetched on first use.
    pub async fn rules(&mut self, client: &WebClient, url: &Url) -> anyhow::Result<Arc<Rules>> {
        let origin = url.origin().ascii_serialization();
        if let Some(rules) = self.by_origin.get(&origin) {
            return Ok(rules.clone());
        }
        let robots_url = url.join("/robots.txt").context("building the robots.txt url")?;
        let response = client.fetch(&WebRequest::get(robots_url.clone())).await.map_err(|error| error.into_anyhow())?;
        let rules = Rules::from_response(response.status.as_u16(), &response.body, &self.agent)
            .map_err(haul_collect_core::transient::transient)
            .with_context(|| format!("reading {robots_url}"))?;
        let rules = Arc::new(rules);
        self.by_origin.insert(origin, rules.clone());
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROBOTS: &str = "User-agent: *\nDisallow: /private/\nCrawl-delay: 2\n\n\
                          User-agent: haul\nDisallow: /no-haul/\nAllow: /private/open\nCrawl-delay: 0.5\n\n\
                          Sitemap: http://site.test/sitemap.xml\n";

    fn allows(rules: &Rules, url: &str) -> bool {
        rules.allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn our_group_wins_over_the_star() {
        let agent = RobotsCache::new("haul/0.1.0").agent;
        assert_eq!(agent, "haul");
        let rules = Rules::from_response(200, ROBOTS.as_bytes(), &agent).unwrap();
        assert!(!allows(&rules, "http://site.test/no-haul/page"));
        assert!(allows(&rules, "http://site.test/private/open"));
        assert!(allows(&rules, "http://site.test/private/other"), "the * group does not apply to haul");
        assert_eq!(rules.crawl_delay(), Some(Duration::from_millis(500)));
        assert_eq!(rules.sitemaps(), ["http://site.test/sitemap.xml"]);

        let other = Rules::from_response(200, ROBOTS.as_bytes(), "otherbot").unwrap();
        assert!(!allows(&other, "http://site.test/private/other"));
        assert_eq!(other.crawl_delay(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn missing_files_allow_and_failing_ones_stop() {
        for status in [401, 403, 404, 410] {
            let rules = Rules::from_response(status, b"", "haul").unwrap();
            assert!(allows(&rules, "http://site.test/anything"), "{status}");
            assert_eq!(rules.crawl_delay(), None);
        }
        let error = Rules::from_response(503, b"", "haul").unwrap_err();
        assert_eq!(error.to_string(), "robots.txt answered 503; the site's rules are unknown");
    }
}
