//! Rejects messages whose text contains a blocked word: the publisher gets a NACK
//! that names the word.
//!
//! ```text
//!  message ──▶ text? ──no (binary data)────────────────▶ Pass
//!                │ yes
//!                ▼
//!        words (ASCII: a separator bit mask, 8 bytes per step; else Unicode split)
//!                │ each word: length and first letter in the list? ──no──▶ next word
//!                │ yes: lowercase it into a 64-bit key, binary search in the keys
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

/// Words are compared as 64-bit keys: at most 8 bytes, big-endian, zero-padded, so
/// keys sort as the words do and one integer comparison replaces a string comparison.
const MAX_WORD_LEN: usize = 8;

/// [`BLOCKED_WORDS`] as keys (same order, so a key's index is its word's).
const KEYS: [u64; BLOCKED_WORDS.len()] = LIST.keys;

/// For each first letter `a`..=`z`, bit `n` is set when a blocked word of `n` bytes
/// starts with it: most words of a message are ruled out by this one lookup, before
/// any key is built or searched.
const LENGTHS_BY_FIRST_LETTER: [u16; 26] = LIST.lengths;

struct Tables {
    keys: [u64; BLOCKED_WORDS.len()],
    lengths: [u16; 26],
}

const LIST: Tables = tables();

/// Checks the list's invariants at compile time (a panic here is a build error) and
/// derives the lookup tables from it.
const fn tables() -> Tables {
    let mut tables = Tables {
        keys: [0; BLOCKED_WORDS.len()],
        lengths: [0; 26],
    };
    let mut i = 0;
    while i < BLOCKED_WORDS.len() {
        let word = BLOCKED_WORDS[i].as_bytes();
        assert!(
            !word.is_empty() && word.len() <= MAX_WORD_LEN,
            "blocked words are 1 to 8 bytes"
        );
        let mut key = 0u64;
        let mut j = 0;
        while j < word.len() {
            assert!(
                word[j].is_ascii_lowercase(),
                "blocked words are lowercase ASCII letters"
            );
            key = (key << 8) | word[j] as u64;
            j += 1;
        }
        key <<= 8 * (MAX_WORD_LEN - word.len());
        assert!(
            i == 0 || tables.keys[i - 1] < key,
            "BLOCKED_WORDS must be sorted, without duplicates"
        );
        tables.keys[i] = key;
        tables.lengths[(word[0] - b'a') as usize] |= 1 << word.len();
        i += 1;
    }
    tables
}

/// The first blocked word in `text`, as it appears in [`BLOCKED_WORDS`], if any.
///
/// No allocation, no branch per byte: ASCII text (checked at memory speed) is
/// classified 8 bytes at a time into a bit mask of separators, and only word
/// boundaries are visited. Other text is split on Unicode characters.
pub fn blocked_word(text: &str) -> Option<&'static str> {
    if !text.is_ascii() {
        return text
            .split(|c: char| !c.is_alphanumeric())
            .find_map(|word| lookup(word.as_bytes()));
    }
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, block) in bytes.chunks(64).enumerate() {
        let mut separators = separator_mask(block);
        while separators != 0 {
            let at = index * 64 + separators.trailing_zeros() as usize;
            separators &= separators - 1;
            if let Some(word) = bytes.get(start..at).and_then(lookup) {
                return Some(word);
            }
            start = at + 1;
        }
    }
    bytes.get(start..).and_then(lookup)
}

/// Bit `i` is set when `block[i]` is not a letter or digit; `block` is at most 64
/// ASCII bytes.
fn separator_mask(block: &[u8]) -> u64 {
    let mut mask = 0;
    for (index, chunk) in block.chunks(8).enumerate() {
        let mut lanes = [b' '; 8];
        for (lane, byte) in lanes.iter_mut().zip(chunk) {
            *lane = *byte;
        }
        mask |= separator_lanes(u64::from_le_bytes(lanes)) << (index * 8);
    }
    match block.len() {
        // The padding of a short last block is not text.
        len @ 0..64 => mask & ((1 << len) - 1),
        _ => mask,
    }
}

/// Bit `i` is set when byte `i` of `lanes` (8 ASCII bytes, little-endian) is not a
/// letter or digit: SWAR range checks, then the 8 flags gathered into one byte.
fn separator_lanes(lanes: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    // Per byte below 0x80, the high bit of `x + 0x80 - lo` says `x >= lo`, and that of
    // `x + 0x7f - hi` says `x > hi`; neither sum carries into the next byte.
    let in_range = |x: u64, lo: u8, hi: u8| {
        (x + ONES * u64::from(0x80 - lo)) & !(x + ONES * u64::from(0x7f - hi)) & HIGH
    };
    // `| 0x20` folds A-Z onto a-z; no other byte lands in a-z.
    let letters = in_range(lanes | (ONES * 0x20), b'a', b'z');
    let digits = in_range(lanes, b'0', b'9');
    let separators = !(letters | digits) & HIGH;
    // Byte i's flag (bit 8i after the shift) lands on bit 56 + i of the product.
    (separators >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// `token` (one word of the text) as a blocked word, if it is one.
#[inline(always)]
fn lookup(token: &[u8]) -> Option<&'static str> {
    let (&first, len) = (token.first()?, token.len());
    let letter = (first | 0x20).checked_sub(b'a')?;
    let lengths = LENGTHS_BY_FIRST_LETTER.get(usize::from(letter))?;
    if len > MAX_WORD_LEN || lengths & (1 << len) == 0 {
        return None;
    }
    // `| 0x20` lowercases ASCII letters and leaves digits as they are; a byte outside
    // ASCII stays outside it, so cannot match.
    let key = token
        .iter()
        .fold(0u64, |key, byte| (key << 8) | u64::from(byte | 0x20))
        << (8 * (MAX_WORD_LEN - len));
    let index = KEYS.binary_search(&key).ok()?;
    BLOCKED_WORDS.get(index).copied()
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
    fn the_separator_mask_agrees_with_a_byte_by_byte_check() {
        // Every ASCII byte in every lane.
        for byte in 0..0x80u8 {
            for lane in 0..8 {
                let mut lanes = [b'a'; 8];
                lanes[lane] = byte;
                let expected = u64::from(!byte.is_ascii_alphanumeric()) << lane;
                assert_eq!(
                    separator_lanes(u64::from_le_bytes(lanes)),
                    expected,
                    "{byte}"
                );
            }
        }
        // Every block length, with separators in varied places.
        let text: Vec<u8> = (0..64u8)
            .map(|i| if i % 3 == 0 { b' ' } else { b'a' + i % 26 })
            .collect();
        for len in 0..=64 {
            let block = &text[..len];
            let expected = block.iter().enumerate().fold(0u64, |mask, (i, byte)| {
                mask | u64::from(!byte.is_ascii_alphanumeric()) << i
            });
            assert_eq!(separator_mask(block), expected, "{len}");
        }
    }

    #[test]
    fn words_across_block_boundaries_are_found() {
        for offset in 55..70 {
            let text = format!("{}crap{}", "x ".repeat(offset / 2), " y".repeat(40));
            let text = if offset % 2 == 1 {
                format!(" {text}")
            } else {
                text
            };
            assert_eq!(blocked_word(&text), Some("crap"), "{offset}");
            assert_eq!(
                blocked_word(&text.replace("crap", "crapx")),
                None,
                "{offset}"
            );
        }
        assert_eq!(
            blocked_word(&format!("{}damn", "a ".repeat(32))),
            Some("damn")
        );
    }

    #[test]
    fn the_lookup_tables_agree_with_the_list() {
        assert!(BLOCKED_WORDS.iter().all(|word| word.len() <= MAX_WORD_LEN));
        let listed: u32 = LENGTHS_BY_FIRST_LETTER.iter().map(|m| m.count_ones()).sum();
        let mut pairs: Vec<(u8, usize)> = BLOCKED_WORDS
            .iter()
            .map(|w| (w.as_bytes()[0], w.len()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(listed as usize, pairs.len());
        assert!(KEYS.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
