//! Rejects messages whose text contains a blocked word: the publisher gets a NACK
//! that names the word.
//!
//! ```text
//!  message ──▶ text? ──no (binary data)────────────────▶ Pass
//!                │ yes
//!                ▼
//!        words (split on what is not a letter or digit)
//!                │ each word: length and first letter in the list? ──no──▶ next word
//!                │ yes: lowercase it, binary search in BLOCKED_WORDS
//!                ▼
//!     found ──▶ Reject("message contains a blocked word: \"damn\"")   none ──▶ Pass
//! ```
//!
//! Matching is case-insensitive and on whole words: `Damn!` matches `damn`,
//! `damnation` does not. A word is a run of Unicode letters and digits, so curly quotes
//! and other punctuation separate words, while a letter outside ASCII belongs to its
//! word (`craé` is not `crap`). Only ASCII letters are folded: the list is ASCII.
//!
//! What it does not do: catch spelling tricks (`d4mn`, `d a m n`), look at the
//! message's name or headers, or inspect binary (non-UTF-8) bodies, which pass.
//!
//! [`blocked_word`] is the whole filter as a plain function, so a benchmark can run the
//! same logic natively next to the component.

use tern_function::{Action, Message};

/// The blocked words: lowercase ASCII letters, sorted, no duplicates (checked when this
/// crate compiles). Deliberately short and mild: common English swear words, no slurs.
pub const BLOCKED_WORDS: &[&str] = &[
    "arse", "arsehole", "ass", "asshole", "bastard", "bellend", "bitch", "bloody", "bollocks",
    "bugger", "bullshit", "crap", "crappy", "dammit", "damn", "dick", "dickhead", "dipshit",
    "douche", "dumbass", "fuck", "fucked", "fucking", "goddamn", "jackass", "knobhead", "piss",
    "pissed", "prick", "shit", "shitty", "sod", "tosser", "twat", "wanker", "wtf",
];

/// The longest word in [`BLOCKED_WORDS`]: a longer word cannot match.
const MAX_WORD_LEN: usize = LIST.max_len;

/// For each first letter `a`..=`z`, bit `n` is set when a blocked word of `n` bytes
/// starts with it: most words of a message are ruled out by this one lookup, without
/// lowercasing or searching.
const LENGTHS_BY_FIRST_LETTER: [u32; 26] = LIST.lengths;

struct ListFacts {
    max_len: usize,
    lengths: [u32; 26],
}

const LIST: ListFacts = list_facts(BLOCKED_WORDS);

/// Checks the list's invariants at compile time (a panic here is a build error) and
/// derives the lookup tables from it.
const fn list_facts(words: &[&str]) -> ListFacts {
    let mut facts = ListFacts {
        max_len: 0,
        lengths: [0; 26],
    };
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_bytes();
        assert!(
            !word.is_empty() && word.len() < 32,
            "blocked words are 1 to 31 bytes"
        );
        let mut j = 0;
        while j < word.len() {
            assert!(
                word[j].is_ascii_lowercase(),
                "blocked words are lowercase ASCII letters"
            );
            j += 1;
        }
        if i > 0 {
            assert!(
                is_less(words[i - 1].as_bytes(), word),
                "BLOCKED_WORDS must be sorted, without duplicates"
            );
        }
        facts.lengths[(word[0] - b'a') as usize] |= 1 << word.len();
        if word.len() > facts.max_len {
            facts.max_len = word.len();
        }
        i += 1;
    }
    facts
}

/// `a < b` in byte order (`Ord` is not usable in a `const fn`).
const fn is_less(a: &[u8], b: &[u8]) -> bool {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// The first blocked word in `text`, as it appears in [`BLOCKED_WORDS`], if any.
///
/// Walks the bytes once: ASCII is classified byte by byte, and only a byte outside
/// ASCII is decoded as a character. No allocation.
pub fn blocked_word(text: &str) -> Option<&'static str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let (in_word, width) = if byte.is_ascii() {
            (byte.is_ascii_alphanumeric(), 1)
        } else {
            // `at` is always on a character boundary: it only moves by whole characters.
            match text.get(at..).and_then(|rest| rest.chars().next()) {
                Some(c) => (c.is_alphanumeric(), c.len_utf8()),
                None => (false, 1),
            }
        };
        if !in_word {
            if let Some(word) = bytes.get(start..at).and_then(lookup) {
                return Some(word);
            }
            start = at + width;
        }
        at += width;
    }
    bytes.get(start..).and_then(lookup)
}

/// `token` (one word of the text) as a blocked word, if it is one.
fn lookup(token: &[u8]) -> Option<&'static str> {
    let &[first, ..] = token else {
        return None;
    };
    let first = first.to_ascii_lowercase();
    if token.len() > MAX_WORD_LEN || !first.is_ascii_lowercase() {
        return None;
    }
    if LENGTHS_BY_FIRST_LETTER[usize::from(first - b'a')] & (1 << token.len()) == 0 {
        return None;
    }
    let mut lowered = [0u8; MAX_WORD_LEN];
    let lowered = &mut lowered[..token.len()];
    for (to, from) in lowered.iter_mut().zip(token) {
        *to = from.to_ascii_lowercase();
    }
    BLOCKED_WORDS
        .binary_search_by(|word| word.as_bytes().cmp(lowered))
        .ok()
        .and_then(|index| BLOCKED_WORDS.get(index).copied())
}

/// Rejects a text message that contains a blocked word; passes anything else.
pub fn handle(message: Message) -> Action {
    match message.text().and_then(blocked_word) {
        Some(word) => Action::Reject(format!("message contains a blocked word: {word:?}")),
        None => Action::Pass,
    }
}

tern_function::function!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use tern_function::testing::run;

    fn action(data: impl Into<Vec<u8>>) -> Action {
        run(handle, Message::new("chat:lobby", data)).action
    }

    #[test]
    fn clean_text_passes() {
        assert_eq!(action("hello there, how are you?"), Action::Pass);
        assert_eq!(action(""), Action::Pass);
        assert_eq!(action("   ...  !!"), Action::Pass);
    }

    #[test]
    fn a_blocked_word_is_rejected_with_its_name() {
        assert_eq!(
            action("well damn, that hurt"),
            Action::Reject("message contains a blocked word: \"damn\"".into())
        );
    }

    #[test]
    fn matching_ignores_case() {
        assert_eq!(blocked_word("DAMN"), Some("damn"));
        assert_eq!(blocked_word("Oh CrAp"), Some("crap"));
    }

    #[test]
    fn only_whole_words_match() {
        // Words that contain a blocked word, or are contained in one.
        for text in [
            "damnation",
            "class assessment",
            "scrappy",
            "shitake",
            "pissarro",
            "sodium",
        ] {
            assert_eq!(blocked_word(text), None, "{text}");
        }
        // Digits belong to a word; an underscore separates words.
        assert_eq!(blocked_word("crap1"), None);
        assert_eq!(blocked_word("crap_1"), Some("crap"));
    }

    #[test]
    fn punctuation_and_position_do_not_matter() {
        for text in [
            "crap",
            "crap!",
            "(crap)",
            "oh,crap",
            "x\ncrap\ty",
            "“crap”",
            "it’s crap…",
            "end: crap",
        ] {
            assert_eq!(blocked_word(text), Some("crap"), "{text}");
        }
    }

    #[test]
    fn letters_outside_ascii_belong_to_their_word() {
        assert_eq!(blocked_word("craé"), None);
        assert_eq!(blocked_word("écrap"), None);
        assert_eq!(blocked_word("日本語 crap 日本語"), Some("crap"));
    }

    #[test]
    fn the_first_blocked_word_is_named() {
        assert_eq!(blocked_word("crap and damn"), Some("crap"));
    }

    #[test]
    fn every_listed_word_is_found_and_longer_ones_are_not() {
        for word in BLOCKED_WORDS {
            assert_eq!(blocked_word(&format!("a {word} b")), Some(*word));
            assert_eq!(blocked_word(&word.to_uppercase()), Some(*word));
            assert_eq!(blocked_word(&format!("{word}s{word}")), None);
        }
        assert_eq!(blocked_word(&"a".repeat(MAX_WORD_LEN + 1)), None);
    }

    #[test]
    fn binary_data_passes() {
        assert_eq!(action(vec![0xff, b'c', b'r', b'a', b'p']), Action::Pass);
    }

    #[test]
    fn the_lookup_tables_agree_with_the_list() {
        assert_eq!(
            MAX_WORD_LEN,
            BLOCKED_WORDS.iter().map(|w| w.len()).max().unwrap_or(0)
        );
        let listed: u32 = LENGTHS_BY_FIRST_LETTER.iter().map(|m| m.count_ones()).sum();
        let mut pairs: Vec<(u8, usize)> = BLOCKED_WORDS
            .iter()
            .map(|w| (w.as_bytes()[0], w.len()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(listed as usize, pairs.len());
    }
}
