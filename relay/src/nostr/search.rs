//! NIP-50 words: how a search and an event's content are cut into words. Live matching
//! ([`Filter::matches`](super::Filter::matches)) and the PostgreSQL full-text index use this
//! one definition, so a stored event and a live one match the same searches.

use std::borrow::Cow;

/// The words of a text: maximal runs of letters and digits, lowercased (borrowed from the
/// text when already lowercase, which most words are).
pub fn words(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            if word.chars().any(char::is_uppercase) {
                Cow::Owned(word.to_lowercase())
            } else {
                Cow::Borrowed(word)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_letters_and_digits_lowercased() {
        let found: Vec<Cow<'_, str>> = words("Nostr-apps, of 2026: Café ÜBER_alles!").collect();
        assert_eq!(
            found,
            ["nostr", "apps", "of", "2026", "café", "über", "alles"]
        );
        assert_eq!(words("?! …").count(), 0);
    }
}
