//! Reading a user's Cypher, the one query text that crosses into storage: a tokenizer (strings,
//! comments and quoted names are never mistaken for keywords) and the read-only check. It lives
//! with the engine whose language it reads; the query planner uses it too. Deliberately not a
//! Cypher parser: Kuzu parses; this only has to be right about keywords and brackets.

/// Why a query text is refused before it reaches the engine; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Longest accepted query text.
pub const MAX_CYPHER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare name or keyword (as written).
    Ident(String),
    /// A `backtick-quoted` name: never a keyword.
    Quoted(String),
    Str,
    Num,
    /// `$name`
    Param(String),
    Punct(&'static str),
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
    pub fn is(&self, p: &str) -> bool {
        matches!(&self.tok, Tok::Punct(q) if *q == p)
    }
    pub fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(s) | Tok::Quoted(s) => Some(s),
            _ => None,
        }
    }
}

const PUNCT2: [&str; 9] = ["->", "<-", "<>", "<=", ">=", "=~", "..", "::", "!="];
const PUNCT1: &str = "()[]{},.:;=<>+-*/%^|!?&";

pub fn tokenize(q: &str) -> Result<Vec<Token>, Refused> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if q[i..].starts_with("//") {
            i = q[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if q[i..].starts_with("/*") {
            i = q[i + 2..]
                .find("*/")
                .map(|n| i + 2 + n + 2)
                .ok_or_else(|| Refused(format!("unterminated comment at byte {i}")))?;
        } else if c == b'\'' || c == b'"' {
            let start = i;
            i += 1;
            loop {
                match b.get(i) {
                    None => {
                        return Err(Refused(format!(
                            "unterminated string literal at byte {start}"
                        )))
                    }
                    Some(b'\\') => i += 2,
                    Some(x) if *x == c => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push(Token {
                tok: Tok::Str,
                start,
                end: i,
            });
        } else if c == b'`' {
            let start = i;
            let close = q[i + 1..]
                .find('`')
                .ok_or_else(|| Refused(format!("unterminated `quoted name` at byte {start}")))?;
            i = i + 1 + close + 1;
            out.push(Token {
                tok: Tok::Quoted(q[start + 1..i - 1].to_string()),
                start,
                end: i,
            });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            // A fraction, but not a range's `..`.
            if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
            }
            out.push(Token {
                tok: Tok::Num,
                start,
                end: i,
            });
        } else if c == b'$' || c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 {
            let start = i;
            i += if c == b'$' { 1 } else { 0 };
            while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric() || b[i] >= 0x80) {
                i += 1;
            }
            let text = &q[start..i];
            let tok = match text.strip_prefix('$') {
                Some("") => return Err(Refused(format!("a lone `$` at byte {start}"))),
                Some(name) => Tok::Param(name.to_string()),
                None => Tok::Ident(text.to_string()),
            };
            out.push(Token { tok, start, end: i });
        } else if let Some(p) = PUNCT2.iter().find(|p| q[i..].starts_with(**p)) {
            out.push(Token {
                tok: Tok::Punct(p),
                start: i,
                end: i + 2,
            });
            i += 2;
        } else if let Some(n) = PUNCT1.find(c as char) {
            out.push(Token {
                tok: Tok::Punct(&PUNCT1[n..n + 1]),
                start: i,
                end: i + 1,
            });
            i += 1;
        } else {
            return Err(Refused(format!(
                "unexpected character {:?} at byte {i}",
                c as char
            )));
        }
    }
    Ok(out)
}

/// Words that write, change the schema or reach outside the database.
const WRITE_WORDS: [&str; 22] = [
    "CREATE",
    "MERGE",
    "SET",
    "DELETE",
    "DETACH",
    "REMOVE",
    "DROP",
    "ALTER",
    "COPY",
    "LOAD",
    "INSTALL",
    "UNINSTALL",
    "ATTACH",
    "USE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "CHECKPOINT",
    "EXPORT",
    "IMPORT",
    "TRUNCATE",
    "FOREACH",
];

/// Procedures a read may `CALL` (catalog and index lookups); the rest can change settings or
/// the schema.
const READ_PROCEDURES: [&str; 7] = [
    "show_tables",
    "table_info",
    "show_connection",
    "current_setting",
    "db_version",
    "query_vector_index",
    "query_fts_index",
];

/// Refuses anything that could write. Keywords count only as keywords: not inside strings,
/// not as property names (`e.set`), labels or map keys.
pub fn check_read_only(tokens: &[Token]) -> Result<(), Refused> {
    for (i, t) in tokens.iter().enumerate() {
        // `x -> ...` and `(a, b) -> ...` are list lambdas; in a pattern `->` follows `]` or `-`.
        if t.is("->") && i > 0 && (tokens[i - 1].ident().is_some() || tokens[i - 1].is(")")) {
            return Err(Refused(format!(
                "list lambdas (... -> ...) are refused: Kuzu 0.11 can crash on them; \
                 use UNWIND and a WHERE instead (the `->` at byte {})",
                t.start
            )));
        }
        let Tok::Ident(word) = &t.tok else { continue };
        let prev_is = |p: &str| i > 0 && tokens[i - 1].is(p);
        let next_is = |p: &str| tokens.get(i + 1).is_some_and(|n| n.is(p));
        if prev_is(".") || prev_is(":") || next_is(":") {
            continue;
        }
        if let Some(w) = WRITE_WORDS.iter().find(|w| word.eq_ignore_ascii_case(w)) {
            return Err(Refused(format!(
                "/query is read-only: {w} is refused (write with POST /graph/ingest)"
            )));
        }
        if word.eq_ignore_ascii_case("CALL") {
            let proc = tokens.get(i + 1).and_then(Token::ident).unwrap_or("");
            if !READ_PROCEDURES.iter().any(|p| proc.eq_ignore_ascii_case(p)) {
                return Err(Refused(format!(
                    "/query is read-only: CALL {proc} is refused (allowed: {})",
                    READ_PROCEDURES.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Refuses a statement that uses a parameter (`$name`) that `given` has no value for: Kuzu 0.11
/// has been seen to crash running such a statement.
pub fn check_params_given(tokens: &[Token], given: impl Fn(&str) -> bool) -> Result<(), Refused> {
    let mut missing: Vec<String> = tokens
        .iter()
        .filter_map(|t| match &t.tok {
            Tok::Param(name) if !given(name) => Some(format!("${name}")),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    missing.dedup();
    Err(Refused(format!(
        "the statement uses {} but params gives no value for it: add it to params",
        missing.join(", ")
    )))
}
