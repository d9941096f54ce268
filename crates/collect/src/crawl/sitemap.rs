//! Sitemaps (sitemaps.org): a `<urlset>` lists pages, a `<sitemapindex>`
//! lists more sitemaps. Either may be gzip-compressed (`sitemap.xml.gz`),
//! which is recognised by its content rather than its name. Only the `<loc>`
//! of each entry is read; namespaces and the other tags are ignored.

use std::io::Read;

use anyhow::{Context, bail};
use quick_xml::Reader;
use quick_xml::events::Event;

/// The most a sitemap may hold once decompressed; the protocol allows 50 MB.
const MAX_UNCOMPRESSED: u64 = 64 * 1024 * 1024;

/// What a sitemap file lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sitemap {
    /// Pages (`<urlset>`).
    Pages(Vec<String>),
    /// Other sitemaps (`<sitemapindex>`).
    Index(Vec<String>),
}

/// Reads a sitemap or sitemap index, plain or gzip-compressed.
pub fn parse(body: &[u8]) -> anyhow::Result<Sitemap> {
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut xml = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(MAX_UNCOMPRESSED + 1)
            .read_to_end(&mut xml)
            .context("decompressing the gzip sitemap")?;
        if xml.len() as u64 > MAX_UNCOMPRESSED {
            bail!("the sitemap holds more than {MAX_UNCOMPRESSED} bytes once decompressed");
        }
        return parse_xml(&xml);
    }
    parse_xml(body)
}

fn parse_xml(xml: &[u8]) -> anyhow::Result<Sitemap> {
    let mut reader = Reader::from_reader(xml);
    let mut buffer = Vec::new();
    let mut root: Option<Vec<u8>> = None;
    let mut locations = Vec::new();
    let mut location: Option<String> = None;
    loop {
        let position = reader.buffer_position();
        let event = reader.read_event_into(&mut buffer).with_context(|| format!("invalid xml at byte {position}"))?;
        match event {
            Event::Start(start) => {
                let name = start.local_name().as_ref().to_vec();
                if root.is_none() {
                    root = Some(name);
                } else if name == b"loc" {
                    location = Some(String::new());
                }
            }
            Event::Text(text) => {
                if let Some(location) = location.as_mut() {
                    location.push_str(&text.xml_content().context("decoding a <loc>")?);
                }
            }
            Event::CData(data) => {
                if let Some(location) = location.as_mut() {
                    location.push_str(&data.decode().context("decoding a <loc>")?);
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(location) = location.as_mut() {
                    let resolved = match reference.resolve_char_ref().context("decoding a <loc>")? {
                        Some(character) => character.to_string(),
                        None => {
                            let name = reference.decode().context("decoding a <loc>")?;
                            match quick_xml::escape::resolve_xml_entity(&name) {
                                Some(text) => text.to_string(),
                                None => bail!("unknown entity &{name}; in a <loc>"),
                            }
                        }
                    };
                    location.push_str(&resolved);
                }
            }
            Event::End(end) if end.local_name().as_ref() == b"loc" => {
                if let Some(location) = location.take().map(|text| text.trim().to_string())
                    && !location.is_empty()
                {
                    locations.push(location);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    match root.as_deref() {
        Some(b"urlset") => Ok(Sitemap::Pages(locations)),
        Some(b"sitemapindex") => Ok(Sitemap::Index(locations)),
        Some(other) => bail!("not a sitemap: its root element is <{}>", String::from_utf8_lossy(other)),
        None => bail!("not a sitemap: it has no root element"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    #[test]
    fn reads_a_urlset() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc> http://example.com/a?x=1&amp;y=2 </loc><lastmod>2024-01-01</lastmod></url>
  <url><loc><![CDATA[http://example.com/b]]></loc></url>
  <url><loc>http://example.com/caf&#233;</loc></url>
  <url><loc></loc></url>
</urlset>"#;
        assert_eq!(
            parse(xml.as_bytes()).unwrap(),
            Sitemap::Pages(vec![
                "http://example.com/a?x=1&y=2".into(),
                "http://example.com/b".into(),
                "http://example.com/café".into(),
            ])
        );
    }

    #[test]
    fn reads_a_gzip_index_with_a_prefix() {
        let xml = r#"<sm:sitemapindex xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sm:sitemap><sm:loc>http://example.com/one.xml</sm:loc></sm:sitemap>
  <sm:sitemap><sm:loc>http://example.com/two.xml.gz</sm:loc></sm:sitemap>
</sm:sitemapindex>"#;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(xml.as_bytes()).unwrap();
        let gzip = encoder.finish().unwrap();
        assert_eq!(
            parse(&gzip).unwrap(),
            Sitemap::Index(vec!["http://example.com/one.xml".into(), "http://example.com/two.xml.gz".into()])
        );
    }

    #[test]
    fn refuses_what_is_not_a_sitemap() {
        assert!(parse(b"<html><body>hi</body></html>").unwrap_err().to_string().contains("root element is <html>"));
        assert!(parse(b"").unwrap_err().to_string().contains("no root element"));
        assert!(
            format!("{:#}", parse(b"<urlset><url><loc>&bogus;</loc></url></urlset>").unwrap_err()).contains("bogus")
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_xml_like_text(text in "(<[a-z:]{0,8}>|</[a-z:]{0,8}>|&[a-z#0-9]{0,5};?|[a-z /]{0,5}){0,20}") {
            let _ = parse(text.as_bytes());
        }
    }
}
