//! The text steps of the `cleanse` processor, applied to a string in place:
//! trimming and collapsing Unicode whitespace, and changing case. Each one
//! leaves an already clean string untouched, without allocating.

use serde::Deserialize;

/// The case a field's text is changed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Case {
    Upper,
    Lower,
    /// The first letter of each word upper case, the others lower case; a word
    /// starts after any character that is neither alphanumeric nor an apostrophe.
    Title,
}

/// Removes leading and trailing Unicode whitespace.
pub fn trim(text: &mut String) {
    let end = text.trim_end().len();
    text.truncate(end);
    let start = text.len() - text.trim_start().len();
    if start > 0 {
        text.drain(..start);
    }
}

/// Replaces each run of Unicode whitespace by one ASCII space.
pub fn collapse_whitespace(text: &mut String) {
    if !needs_collapsing(text) {
        return;
    }
    let mut collapsed = String::with_capacity(text.len());
    let mut in_whitespace = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_whitespace {
                collapsed.push(' ');
            }
            in_whitespace = true;
        } else {
            collapsed.push(c);
            in_whitespace = false;
        }
    }
    *text = collapsed;
}

/// Whether `text` has whitespace other than single spaces.
fn needs_collapsing(text: &str) -> bool {
    if text.is_ascii() {
        // Without an early exit, so that the loop runs on whole vectors.
        let controls = text.bytes().fold(false, |found, byte| found | (b'\t'..=b'\r').contains(&byte));
        return controls || text.contains("  ");
    }
    let mut after_whitespace = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if after_whitespace || c != ' ' {
                return true;
            }
            after_whitespace = true;
        } else {
            after_whitespace = false;
        }
    }
    false
}

/// Changes the case of `text`; ASCII text is changed in place.
pub fn change_case(text: &mut String, case: Case) {
    match case {
        Case::Upper if text.is_ascii() => text.make_ascii_uppercase(),
        Case::Lower if text.is_ascii() => text.make_ascii_lowercase(),
        Case::Upper => *text = text.to_uppercase(),
        Case::Lower => *text = text.to_lowercase(),
        Case::Title => *text = title_case(text),
    }
}

fn title_case(text: &str) -> String {
    let mut titled = String::with_capacity(text.len());
    let mut word_start = true;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if word_start {
                titled.extend(c.to_uppercase());
            } else {
                titled.extend(c.to_lowercase());
            }
            word_start = false;
        } else {
            titled.push(c);
            word_start = !matches!(c, '\'' | '’');
        }
    }
    titled
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn apply(text: &str, step: impl Fn(&mut String)) -> String {
        let mut text = text.to_string();
        step(&mut text);
        text
    }

    #[test]
    fn trim_removes_unicode_whitespace_at_both_ends() {
        assert_eq!(apply("\u{3000}\u{a0} a b \t\u{2003}\n", trim), "a b");
        assert_eq!(apply("   ", trim), "");
        assert_eq!(apply("", trim), "");
        assert_eq!(apply("ok", trim), "ok");
    }

    #[test]
    fn collapse_turns_whitespace_runs_into_one_space() {
        assert_eq!(apply("a \u{a0}\u{2009} b\t\nc", collapse_whitespace), "a b c");
        assert_eq!(apply("a\u{3000}b", collapse_whitespace), "a b");
        assert_eq!(apply("  a  ", collapse_whitespace), " a ");
        assert_eq!(apply("a b", collapse_whitespace), "a b");
        assert_eq!(apply("a\x0bb c\r", collapse_whitespace), "a b c ");
        assert_eq!(apply("a \u{85}b", collapse_whitespace), "a b");
    }

    #[test]
    fn case_changes_non_ascii_letters() {
        assert_eq!(apply("straße", |t| change_case(t, Case::Upper)), "STRASSE");
        assert_eq!(apply("ÇA VA", |t| change_case(t, Case::Lower)), "ça va");
        assert_eq!(apply("élodie ÇELIK-ÖZGÜR", |t| change_case(t, Case::Title)), "Élodie Çelik-Özgür");
        assert_eq!(apply("σοφία παπαδοπούλου", |t| change_case(t, Case::Title)), "Σοφία Παπαδοπούλου");
        assert_eq!(apply("o'neil (dublin) 3RD", |t| change_case(t, Case::Title)), "O'neil (Dublin) 3rd");
        assert_eq!(apply("ǆemal", |t| change_case(t, Case::Title)), "Ǆemal");
    }

    proptest! {
        #[test]
        fn collapsed_text_has_single_spaces_only(text in "[ a\t\n\x0b\x0c\r]{0,12}") {
            let collapsed = apply(&text, collapse_whitespace);
            prop_assert!(!collapsed.contains("  ") && !collapsed.contains(|c: char| c.is_whitespace() && c != ' '));
            let letters = |text: &str| text.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            prop_assert_eq!(letters(&collapsed), letters(&text));
        }
    }
}
