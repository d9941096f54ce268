//! Detectors of personal data inside free text, for the `mask` processor's
//! scan: e-mail addresses, international phone numbers, mainland China mobile
//! numbers, PRC resident identity numbers (checked with their ISO 7064
//! MOD 11-2 check digit, province code and birth date), bank card numbers
//! (checked with Luhn) and IPv4/IPv6 addresses (checked with the standard
//! parsers). A regular expression finds candidates; a pure check confirms
//! them. Every function here is pure and never panics on any input.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::LazyLock;

use chrono::NaiveDate;
use regex::Regex;
use serde::Deserialize;

/// A kind of personal data the scan looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// `local@domain.tld`.
    Email,
    /// An international number written with `+` and 7 to 15 digits (E.164),
    /// digits optionally grouped by spaces or dashes.
    Phone,
    /// A mainland China mobile number `1[3-9]` and 9 digits, optionally after `+86`.
    CnMobile,
    /// An 18-character PRC resident identity number with a valid check digit,
    /// province code and birth date.
    CnId,
    /// 13 to 19 digits, optionally grouped by spaces or dashes, passing Luhn.
    BankCard,
    Ipv4,
    Ipv6,
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}").unwrap());
static PHONE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\+[1-9](?:[ \-]?[0-9]){6,14}").unwrap());
static CN_MOBILE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?:\+86[ \-]?)?1[3-9][0-9]{9}").unwrap());
static CN_ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]{17}[0-9Xx]").unwrap());
static BANK_CARD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9](?:[ \-]?[0-9]){12,18}").unwrap());
static IPV4: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}").unwrap());
static IPV6: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*").unwrap());

impl Detector {
    /// The byte ranges of `text` this detector finds, in order, not overlapping.
    pub fn find(self, text: &str) -> Vec<Range<usize>> {
        let bytes = text.as_bytes();
        let digit_at = |i: Option<usize>| i.and_then(|i| bytes.get(i)).is_some_and(u8::is_ascii_digit);
        let digit_bounded = |range: &Range<usize>| !digit_at(range.start.checked_sub(1)) && !digit_at(Some(range.end));
        match self {
            Detector::Email => EMAIL.find_iter(text).map(|m| m.range()).collect(),
            Detector::Phone => PHONE.find_iter(text).map(|m| m.range()).filter(digit_bounded).collect(),
            Detector::CnMobile => CN_MOBILE.find_iter(text).map(|m| m.range()).filter(digit_bounded).collect(),
            Detector::CnId => CN_ID
                .find_iter(text)
                .filter(|m| digit_bounded(&m.range()) && is_valid_cn_id(m.as_str()))
                .map(|m| m.range())
                .collect(),
            Detector::BankCard => BANK_CARD
                .find_iter(text)
                .filter(|m| digit_bounded(&m.range()))
                .filter_map(|m| longest_luhn_span(m.as_str()).map(|span| m.start() + span.start..m.start() + span.end))
                .collect(),
            Detector::Ipv4 => IPV4
                .find_iter(text)
                .filter(|m| {
                    let range = m.range();
                    let outside_ok = |b: Option<&u8>| !b.is_some_and(|b| b.is_ascii_digit() || *b == b'.');
                    outside_ok(range.start.checked_sub(1).and_then(|i| bytes.get(i)))
                        && (outside_ok(bytes.get(range.end))
                            || (bytes.get(range.end) == Some(&b'.')
                                && !bytes.get(range.end + 1).is_some_and(u8::is_ascii_digit)))
                        && m.as_str().parse::<Ipv4Addr>().is_ok()
                })
                .map(|m| m.range())
                .collect(),
            Detector::Ipv6 => IPV6
                .find_iter(text)
                .filter_map(|m| {
                    let before_ok = !(m.start() > 0 && bytes[m.start() - 1].is_ascii_alphanumeric());
                    let after_ok = !bytes.get(m.end()).is_some_and(u8::is_ascii_alphanumeric);
                    let candidate = m.as_str().trim_end_matches('.');
                    let has_hex = candidate.bytes().any(|b| b.is_ascii_hexdigit());
                    (before_ok && after_ok && has_hex && candidate.parse::<Ipv6Addr>().is_ok())
                        .then(|| m.start()..m.start() + candidate.len())
                })
                .collect(),
        }
    }
}

/// The byte ranges every detector finds in `text`, sorted, with overlapping
/// or touching ranges merged.
pub fn scan(text: &str, detectors: &[Detector]) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = detectors.iter().flat_map(|detector| detector.find(text)).collect();
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

const CN_ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CN_ID_CHECK_CHARS: &[u8; 11] = b"10X98765432";
const CN_PROVINCES: [u8; 35] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54, 61, 62, 63,
    64, 65, 71, 81, 82, 91,
];

/// The ISO 7064 MOD 11-2 check character of the first 17 digits of a PRC
/// resident identity number, or `None` if they are not 17 ASCII digits.
pub fn cn_id_check_char(first17: &str) -> Option<char> {
    let digits = first17.as_bytes();
    if digits.len() != 17 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = digits.iter().zip(CN_ID_WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    Some(char::from(CN_ID_CHECK_CHARS[(sum % 11) as usize]))
}

/// Whether `id` is an 18-character PRC resident identity number: a known
/// province code, a real birth date between 1850 and 2099, and the right
/// check character (`X` in either case).
pub fn is_valid_cn_id(id: &str) -> bool {
    if id.len() != 18 || !id.is_ascii() {
        return false;
    }
    let (first17, check) = id.split_at(17);
    let Some(expected) = cn_id_check_char(first17) else { return false };
    if !check.eq_ignore_ascii_case(&expected.to_string()) {
        return false;
    }
    let number = |range: Range<usize>| first17[range].parse::<u32>().ok();
    let province_ok = number(0..2).is_some_and(|p| CN_PROVINCES.iter().any(|&known| u32::from(known) == p));
    let birth_ok = match (number(6..10), number(10..12), number(12..14)) {
        (Some(year), Some(month), Some(day)) => {
            (1850..=2099).contains(&year) && NaiveDate::from_ymd_opt(year as i32, month, day).is_some()
        }
        _ => false,
    };
    province_ok && birth_ok
}

/// Whether a string of ASCII digits passes the Luhn check. Any other
/// character, or no digit at all, fails.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Inside a candidate of digit groups separated by single spaces or dashes,
/// the longest run of whole groups with 13 to 19 digits passing Luhn, as a
/// byte range of the candidate.
fn longest_luhn_span(candidate: &str) -> Option<Range<usize>> {
    let mut groups: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    for (i, b) in candidate.bytes().enumerate() {
        if b == b' ' || b == b'-' {
            groups.push(start..i);
            start = i + 1;
        }
    }
    groups.push(start..candidate.len());
    let mut best: Option<Range<usize>> = None;
    for first in 0..groups.len() {
        for last in first..groups.len() {
            let span = groups[first].start..groups[last].end;
            let digits: String = candidate[span.clone()].chars().filter(char::is_ascii_digit).collect();
            let longer = best.as_ref().is_none_or(|b| span.len() > b.len());
            if longer && (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
                best = Some(span);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn found(detector: Detector, text: &str) -> Vec<&str> {
        detector.find(text).into_iter().map(|range| &text[range]).collect()
    }

    fn luhn_complete(body: &str) -> String {
        (0..10).map(|d| format!("{body}{d}")).find(|n| luhn_valid(n)).unwrap()
    }

    #[test]
    fn finds_each_kind_in_text() {
        assert_eq!(found(Detector::Email, "mail ann.lee+x@mail.example.org."), ["ann.lee+x@mail.example.org"]);
        assert_eq!(found(Detector::Phone, "call +44 20 7946 0958 now"), ["+44 20 7946 0958"]);
        assert_eq!(found(Detector::CnMobile, "tel 13812345678, +86 15912345678"), ["13812345678", "+86 15912345678"]);
        assert!(found(Detector::CnMobile, "id 913812345678").is_empty());
        assert_eq!(found(Detector::CnId, "id 11010519491231002X."), ["11010519491231002X"]);
        assert!(found(Detector::CnId, "id 110105194912310021").is_empty());
        assert_eq!(found(Detector::BankCard, "card 4111 1111 1111 1111 exp"), ["4111 1111 1111 1111"]);
        assert_eq!(found(Detector::BankCard, "order 12 4111-1111-1111-1111"), ["4111-1111-1111-1111"]);
        assert_eq!(found(Detector::Ipv4, "from 192.168.0.1. and 999.1.1.1 and 1.2.3.4.5"), ["192.168.0.1"]);
        assert_eq!(
            found(Detector::Ipv6, "from fe80::1%eth and 2001:db8::ff00:42:8329."),
            ["fe80::1", "2001:db8::ff00:42:8329"]
        );
        assert!(found(Detector::Ipv6, "at 12:30:45 the note:: said").is_empty());
    }

    #[test]
    fn scan_merges_overlapping_finds() {
        let text = "a@b.io 13812345678";
        assert_eq!(scan(text, &[Detector::Email, Detector::CnMobile, Detector::Email]), [0..6, 7..18]);
    }

    proptest! {
        #[test]
        fn generated_cn_ids_pass_and_any_digit_flip_fails(
            province in proptest::sample::select(CN_PROVINCES.to_vec()),
            area in 0u32..10_000,
            date in (1900i32..2030, 1u32..13, 1u32..29),
            sequence in 0u32..1000,
            position in 0usize..18,
            delta in 1u8..10,
        ) {
            let first17 = format!("{province:02}{area:04}{:04}{:02}{:02}{sequence:03}", date.0, date.1, date.2);
            let id = format!("{first17}{}", cn_id_check_char(&first17).unwrap());
            prop_assert!(is_valid_cn_id(&id), "{id}");
            let text = format!("id:{id};");
            prop_assert_eq!(found(Detector::CnId, &text), vec![id.as_str()]);
            let mut changed = id.clone().into_bytes();
            if changed[position] == b'X' {
                changed[position] = b'0' + delta % 10;
            } else {
                changed[position] = b'0' + (changed[position] - b'0' + delta) % 10;
            }
            prop_assert!(!is_valid_cn_id(std::str::from_utf8(&changed).unwrap()));
        }

        #[test]
        fn generated_card_numbers_pass_luhn_and_single_digit_changes_fail(
            body in "[1-9][0-9]{11,17}",
            position in 0usize..19,
            delta in 1u8..10,
        ) {
            let number = luhn_complete(&body);
            prop_assert!(luhn_valid(&number));
            let grouped: Vec<String> = number.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            let text = format!("card {} ok", grouped.join(" "));
            let card = grouped.join(" ");
            prop_assert_eq!(found(Detector::BankCard, &text), vec![card.as_str()]);
            let mut changed = number.into_bytes();
            let position = position % changed.len();
            changed[position] = b'0' + (changed[position] - b'0' + delta) % 10;
            prop_assert!(!luhn_valid(std::str::from_utf8(&changed).unwrap()));
        }

        #[test]
        fn generated_emails_are_found_whole(
            local in "[a-z0-9][a-z0-9._+]{0,15}",
            domain in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,8}){0,2}",
            tld in "[a-z]{2,6}",
            before in "[ ,;:(]{1,3}",
        ) {
            let email = format!("{local}@{domain}.{tld}");
            let text = format!("to{before}{email}{before}x");
            prop_assert_eq!(found(Detector::Email, &text), vec![email.as_str()]);
        }

        #[test]
        fn generated_ip_addresses_are_found_whole(v4 in any::<[u8; 4]>(), v6 in any::<[u16; 8]>(), before in "[ ,;(=]{1,3}") {
            let v4 = Ipv4Addr::from(v4).to_string();
            let v6 = Ipv6Addr::from(v6).to_string();
            let text = format!("a{before}{v4}{before}b{before}{v6}{before}");
            prop_assert_eq!(found(Detector::Ipv4, &text), vec![v4.as_str()]);
            prop_assert_eq!(found(Detector::Ipv6, &text), vec![v6.as_str()]);
        }

        #[test]
        fn detectors_never_panic(text in "\\PC{0,80}") {
            let all = [Detector::Email, Detector::Phone, Detector::CnMobile, Detector::CnId, Detector::BankCard, Detector::Ipv4, Detector::Ipv6];
            for range in scan(&text, &all) {
                prop_assert!(text.get(range).is_some());
            }
        }
    }
}
