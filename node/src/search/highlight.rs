//! Snippets that highlight what actually matched: the query's words as typed, the words
//! they are a prefix of, and words one typo away. Tantivy's own snippets only know exact
//! terms, so a misspelled query would otherwise come back with nothing highlighted.

use std::collections::BTreeMap;

use tantivy::schema::Field;
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{TextAnalyzer, TokenStream};

/// Longest snippet, in characters.
const SNIPPET_MAX_CHARS: usize = 200;

/// Query words shorter than this only match exactly or as a prefix: one typo in a
/// two-letter word matches nearly anything.
const FUZZY_MIN_CHARS: usize = 3;

/// The query's words, as the index's tokenizer splits and lower-cases them (quotes and
/// operators fall away).
pub fn query_words(analyzer: &mut TextAnalyzer, query: &str) -> Vec<String> {
    tokens(analyzer, query)
}

fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// How well a word of the document matches a query word: 1.0 exactly, 0.5 as a prefix
/// or within one typo (insertion, deletion, substitution or transposition) of one of
/// its prefixes, as the index's fuzzy prefix queries match.
fn match_weight(word: &str, query_word: &str) -> Option<f32> {
    if word == query_word {
        return Some(1.0);
    }
    if word.starts_with(query_word) {
        return Some(0.5);
    }
    let length = query_word.chars().count();
    if length < FUZZY_MIN_CHARS {
        return None;
    }
    let chars: Vec<char> = word.chars().collect();
    (length.saturating_sub(1)..=length + 1)
        .filter(|n| *n > 0 && *n <= chars.len())
        .map(|n| chars[..n].iter().collect::<String>())
        .any(|prefix| strsim::osa_distance(&prefix, query_word) <= 1)
        .then_some(0.5)
}

/// The best snippet of `text` as HTML (`<b>` around matches), or `None` when nothing in
/// it matches.
pub fn snippet(
    analyzer: &mut TextAnalyzer,
    field: Field,
    text: &str,
    words: &[String],
) -> Option<String> {
    let mut terms: BTreeMap<String, f32> = BTreeMap::new();
    for token in tokens(analyzer, text) {
        if let Some(weight) = words
            .iter()
            .filter_map(|w| match_weight(&token, w))
            .reduce(f32::max)
        {
            terms.insert(token, weight);
        }
    }
    if terms.is_empty() {
        return None;
    }
    let generator = SnippetGenerator::new(terms, analyzer.clone(), field, SNIPPET_MAX_CHARS);
    let snippet = generator.snippet(text);
    (!snippet.highlighted().is_empty()).then(|| snippet.to_html())
}

#[cfg(test)]
mod tests {
    use tantivy::schema::Schema;
    use tantivy::tokenizer::TokenizerManager;

    use super::*;

    fn analyzer() -> TextAnalyzer {
        TokenizerManager::default().get("default").unwrap()
    }

    fn field() -> Field {
        let mut schema = Schema::builder();
        schema.add_text_field("body", tantivy::schema::TEXT)
    }

    fn highlight(text: &str, query: &str) -> Option<String> {
        let mut analyzer = analyzer();
        let words = query_words(&mut analyzer, query);
        snippet(&mut analyzer, field(), text, &words)
    }

    #[test]
    fn exact_prefix_and_typo_matches_are_highlighted() {
        assert_eq!(
            highlight("The quick fox jumps", "jumps").as_deref(),
            Some("The quick fox <b>jumps</b>")
        );
        assert_eq!(
            highlight("The quick fox jumps", "jum").as_deref(),
            Some("The quick fox <b>jumps</b>")
        );
        assert_eq!(
            highlight("The quick fox jumps", "jumsp").as_deref(),
            Some("The quick fox <b>jumps</b>"),
            "a transposition"
        );
        assert_eq!(
            highlight("The quick fox jumps", "qiuck \"fox").as_deref(),
            Some("The <b>quick</b> <b>fox</b> jumps"),
            "quotes are not words"
        );
    }

    #[test]
    fn unrelated_and_short_fuzzy_words_are_not_highlighted() {
        assert_eq!(highlight("The quick fox jumps", "zebra"), None);
        assert_eq!(
            highlight("an ox", "ax"),
            None,
            "two letters: no typo allowed"
        );
        assert_eq!(highlight("anything", ""), None);
    }
}
