//! Full-text search of the event history: a person's words turned into a safe FTS5 query, and the
//! query over `events_fts` (schema 2) with the usual filters.
//!
//! User text never reaches FTS5 as syntax. Each word (separated by whitespace or control characters) becomes one quoted string
//! (a `"` inside it doubled), so `OR`, `NEAR(`, `-`, `:`, `^` and parentheses are plain text that
//! the tokenizer splits away; the words are ANDed. A trailing `*` stays a prefix search (`rest*`
//! finds `restart`). A word with no letter or digit (`"`, `-`, `*`, `(`) has nothing to search for
//! and is dropped; text made only of such words is refused with [`StoreError::Search`].

use rusqlite::Connection;

use super::StoreError;
use super::records::{EventQuery, EventRecord, EventSearch};

/// The most events one search returns; a larger `limit` is lowered to it, so an agent's careless
/// `limit` cannot pull the whole history into one answer.
pub const SEARCH_LIMIT_MAX: usize = 1000;

/// The most words a query may have. Every word is one more term for FTS5 to intersect; past this
/// it is a paste, not a search.
pub const SEARCH_WORDS_MAX: usize = 32;

/// Why search text was refused: no word to search for.
const NO_WORD: &str = "it has no word to look for (only punctuation, operators or `*`): give at least one letter or digit, or leave the query empty to list events without a text filter";
/// Why search text was refused: too many words.
const TOO_MANY_WORDS: &str = "it has more than 32 words: search for the few that matter";

/// How much of refused text an error message repeats.
const QUOTED_CHARS: usize = 80;

/// Indexes the events above `events_fts_state.indexed_to` (those the writer appended since, and
/// any inserted by hand) and moves the mark to the newest event; returns how many were indexed.
/// One statement for all of them, so FTS5 writes one segment per call, not one per event.
pub(crate) fn index_new_events(conn: &Connection) -> rusqlite::Result<usize> {
    let indexed = conn
        .prepare_cached(
            "INSERT INTO events_fts (rowid, kind, message, server)
             SELECT id, kind, message, server FROM events
             WHERE id > (SELECT indexed_to FROM events_fts_state) ORDER BY id",
        )?
        .execute([])?;
    if indexed > 0 {
        conn.prepare_cached("UPDATE events_fts_state SET indexed_to = (SELECT coalesce(max(id), 0) FROM events)")?
            .execute([])?;
    }
    Ok(indexed)
}

/// Turns search text into an FTS5 query string; `None` when the text is blank (no text filter).
pub(crate) fn fts_query(text: &str) -> Result<Option<String>, StoreError> {
    if text.chars().all(|c| c.is_whitespace() || c.is_control()) {
        return Ok(None);
    }
    let refuse = |problem| StoreError::Search { query: text.chars().take(QUOTED_CHARS).collect(), problem };
    // Control characters separate words too: FTS5 reads its query as a C string, so a NUL inside
    // a quoted word would end the query there, unterminated.
    let words: Vec<&str> =
        text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect();
    if words.len() > SEARCH_WORDS_MAX {
        return Err(refuse(TOO_MANY_WORDS));
    }
    let terms: Vec<String> = words
        .into_iter()
        .filter_map(|word| {
            let stem = word.trim_end_matches('*');
            let prefix = stem.len() < word.len();
            // Without a letter or digit the unicode61 tokenizer finds no token in the word: an
            // empty phrase, which would match nothing and turn the whole AND into nothing.
            if !stem.chars().any(char::is_alphanumeric) {
                return None;
            }
            let quoted = format!("\"{}\"", stem.replace('"', "\"\""));
            Some(if prefix { quoted + "*" } else { quoted })
        })
        .collect();
    if terms.is_empty() {
        return Err(refuse(NO_WORD));
    }
    Ok(Some(terms.join(" AND ")))
}

/// Events matching the search, newest first (by time, then id).
pub(crate) fn search(conn: &Connection, q: &EventSearch) -> Result<Vec<EventRecord>, StoreError> {
    let limit = q.limit.clamp(1, SEARCH_LIMIT_MAX);
    let query = EventQuery { server: q.server.clone(), category: q.category, since_ms: q.since_ms, limit };
    let matching = q.query.as_deref().map(fts_query).transpose()?.flatten();
    super::read::events_where(conn, &query, matching.as_deref(), "searching events")
}
