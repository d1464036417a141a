//! Searching the index: BM25 over title, body and tags, with quoted phrases, prefix and
//! typo tolerance on words, highlighted snippets, `type` and `scope` filters, and privacy
//! enforced inside the query itself: a private document matches only for its owner.

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{TantivyDocument, Term};

use crate::search::highlight;
use crate::search::index::{IndexError, SearchIndex};
use crate::search::terms::{TermsError, text_query};

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query asks for too much work (the caller's mistake).
    #[error(transparent)]
    Terms(#[from] TermsError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Which documents a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's own documents, public or private.
    Mine,
    /// Everyone's public documents.
    Public,
    /// Both.
    All,
}

/// One result.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Hit {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub title: String,
    pub snippet: String,
    pub score: f32,
    pub author_id: String,
}

fn term(field: tantivy::schema::Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::Basic,
    ))
}

/// Searches as `caller`: up to `limit` hits after skipping `offset`.
pub fn search(
    index: &SearchIndex,
    caller: &str,
    text: &str,
    kind: Option<&str>,
    scope: Scope,
    offset: usize,
    limit: usize,
) -> Result<Vec<Hit>, SearchError> {
    let f = index.fields;
    let mut analyzer = index
        .index
        .tokenizer_for_field(f.body)
        .map_err(IndexError::from)?;
    // Stray operators and unbalanced quotes are read as well as possible; text with no
    // word at all finds nothing.
    let Some(user_query) = text_query(&mut analyzer, [f.title, f.body, f.tags], text)? else {
        return Ok(Vec::new());
    };

    let kinds: Vec<&str> = match kind {
        Some(k) => vec![k],
        None => vec!["post", "task", "file"],
    };
    let of_kind = BooleanQuery::new(
        kinds
            .iter()
            .map(|k| (Occur::Should, term(f.kind, k)))
            .collect(),
    );
    let mine = term(f.owner, caller);
    let public = term(f.visibility, "public");
    let visible: Box<dyn Query> = match scope {
        Scope::Mine => mine,
        Scope::Public => public,
        Scope::All => Box::new(BooleanQuery::new(vec![
            (Occur::Should, mine),
            (Occur::Should, public),
        ])),
    };
    let query = BooleanQuery::new(vec![
        (Occur::Must, user_query.box_clone()),
        (Occur::Must, Box::new(of_kind)),
        (Occur::Must, visible),
    ]);
    let searcher = index.reader.searcher();
    let top = searcher
        .search(
            &query,
            &TopDocs::with_limit(limit)
                .and_offset(offset)
                .order_by_score(),
        )
        .map_err(IndexError::from)?;
    let words = highlight::query_words(&mut analyzer, text);
    let mut hits = Vec::with_capacity(top.len());
    for (score, address) in top {
        let doc: TantivyDocument = searcher.doc(address).map_err(IndexError::from)?;
        let text_of = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        // The body's best fragment, else the title's, else the start of the body.
        let snippet = highlight::snippet(&mut analyzer, f.body, &text_of(f.body), &words)
            .or_else(|| highlight::snippet(&mut analyzer, f.title, &text_of(f.title), &words))
            .unwrap_or_else(|| html_escape(&text_of(f.body).chars().take(200).collect::<String>()));
        hits.push(Hit {
            kind: text_of(f.kind),
            id: text_of(f.id),
            title: text_of(f.title),
            snippet,
            score,
            author_id: text_of(f.owner),
        });
    }
    Ok(hits)
}

/// Escapes text for the HTML a snippet is.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
