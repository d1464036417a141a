//! The text of a search as a tantivy query whose work is bounded. Every word must match
//! (in the title, boosted, the body or the tags). A word is expanded only where it pays:
//! one typo for words of [`TYPO_MIN_CHARS`] or more, and prefix matching (search as you
//! type) for the last word only, from [`PREFIX_MIN_CHARS`]. A quoted phrase matches its
//! words in order. At most [`MAX_WORDS`] words: a query with more is refused, since each
//! expanded word walks the term dictionary.

use tantivy::Term;
use tantivy::query::{
    BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;

use crate::search::highlight::query_words;

/// The most words (phrase words included) one query may have.
pub const MAX_WORDS: usize = 16;

/// Words this long or longer match with one typo.
pub const TYPO_MIN_CHARS: usize = 4;

/// The last word matches as a prefix from this length.
pub const PREFIX_MIN_CHARS: usize = 2;

/// How much more a title match counts than a body or tag match.
const TITLE_BOOST: f32 = 2.0;

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermsError {
    #[error("must have at most {MAX_WORDS} words")]
    TooManyWords,
}

/// One part of the text: a bare word, or the words of a quoted phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Word(String),
    Phrase(Vec<String>),
}

/// Splits the text into bare words and quoted phrases (an unbalanced quote runs to the
/// end), each through the fields' analyzer (lowercased, punctuation dropped).
fn parts(analyzer: &mut TextAnalyzer, text: &str) -> Vec<Part> {
    let mut out = Vec::new();
    for (i, piece) in text.split('"').enumerate() {
        let words = query_words(analyzer, piece);
        if i % 2 == 1 && words.len() > 1 {
            out.push(Part::Phrase(words));
        } else {
            out.extend(words.into_iter().map(Part::Word));
        }
    }
    out
}

/// The query for `text` over `fields` (`fields[0]` is the title). `None` when the text
/// has no word at all.
pub fn text_query(
    analyzer: &mut TextAnalyzer,
    fields: [Field; 3],
    text: &str,
) -> Result<Option<Box<dyn Query>>, TermsError> {
    let parts = parts(analyzer, text);
    let words: usize = parts
        .iter()
        .map(|p| match p {
            Part::Word(_) => 1,
            Part::Phrase(words) => words.len(),
        })
        .sum();
    if words > MAX_WORDS {
        return Err(TermsError::TooManyWords);
    }
    let last = parts.len().checked_sub(1);
    let clauses: Vec<(Occur, Box<dyn Query>)> = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let per_field = fields
                .iter()
                .enumerate()
                .map(|(f, &field)| {
                    let query = match part {
                        Part::Word(word) => word_query(field, word, Some(i) == last),
                        Part::Phrase(words) => phrase_query(field, words),
                    };
                    let query: Box<dyn Query> = if f == 0 {
                        Box::new(BoostQuery::new(query, TITLE_BOOST))
                    } else {
                        query
                    };
                    (Occur::Should, query)
                })
                .collect();
            (
                Occur::Must,
                Box::new(BooleanQuery::new(per_field)) as Box<dyn Query>,
            )
        })
        .collect();
    Ok((!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>))
}

/// One word on one field: exact, and within one typo when long enough, and as a prefix
/// when it is the last word.
fn word_query(field: Field, word: &str, last: bool) -> Box<dyn Query> {
    let term = Term::from_field_text(field, word);
    let length = word.chars().count();
    let typos = u8::from(length >= TYPO_MIN_CHARS);
    let mut variants: Vec<(Occur, Box<dyn Query>)> = vec![(
        Occur::Should,
        Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
    )];
    if last && length >= PREFIX_MIN_CHARS {
        variants.push((
            Occur::Should,
            Box::new(FuzzyTermQuery::new_prefix(term, typos, true)),
        ));
    } else if typos > 0 {
        variants.push((
            Occur::Should,
            Box::new(FuzzyTermQuery::new(term, typos, true)),
        ));
    }
    Box::new(BooleanQuery::new(variants))
}

fn phrase_query(field: Field, words: &[String]) -> Box<dyn Query> {
    let terms = words
        .iter()
        .map(|w| Term::from_field_text(field, w))
        .collect();
    Box::new(PhraseQuery::new(terms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::tokenizer::{LowerCaser, SimpleTokenizer};

    fn analyzer() -> TextAnalyzer {
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(LowerCaser)
            .build()
    }

    #[test]
    fn quoted_words_make_a_phrase_and_the_rest_are_words() {
        let found = parts(&mut analyzer(), r#"Fox "quick Brown" jumps "lone""#);
        assert_eq!(
            found,
            vec![
                Part::Word("fox".into()),
                Part::Phrase(vec!["quick".into(), "brown".into()]),
                Part::Word("jumps".into()),
                Part::Word("lone".into()),
            ]
        );
        assert_eq!(
            parts(&mut analyzer(), r#"unbalanced "runs to the end"#),
            vec![
                Part::Word("unbalanced".into()),
                Part::Phrase(vec!["runs".into(), "to".into(), "the".into(), "end".into()]),
            ]
        );
    }

    #[test]
    fn more_than_the_word_limit_is_refused_and_no_word_is_no_query() {
        let fields = {
            let mut b = tantivy::schema::Schema::builder();
            [
                b.add_text_field("t", tantivy::schema::TEXT),
                b.add_text_field("b", tantivy::schema::TEXT),
                b.add_text_field("g", tantivy::schema::TEXT),
            ]
        };
        let many = "word ".repeat(MAX_WORDS + 1);
        assert_eq!(
            text_query(&mut analyzer(), fields, &many).err(),
            Some(TermsError::TooManyWords)
        );
        let enough = "word ".repeat(MAX_WORDS);
        assert!(matches!(
            text_query(&mut analyzer(), fields, &enough),
            Ok(Some(_))
        ));
        assert!(matches!(
            text_query(&mut analyzer(), fields, "+-+- ~~~"),
            Ok(None)
        ));
    }
}
