//! Reading a user's Cypher before it reaches any shard: a tokenizer (strings, comments and
//! quoted names are never mistaken for keywords), the read-only check, and the analysis that
//! decides whether a query's per-shard answers can be merged into the answer one database
//! holding the whole graph would give — and if so, how to rewrite it for the shards.
//!
//! This is deliberately not a Cypher parser. It recognises one family of shapes (see
//! [`analyze`]) exactly and refuses everything else with a reason, so torua never returns a
//! silently wrong global answer.

use std::fmt;

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
    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
    fn is(&self, p: &str) -> bool {
        matches!(&self.tok, Tok::Punct(q) if *q == p)
    }
    fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(s) | Tok::Quoted(s) => Some(s),
            _ => None,
        }
    }
}

const PUNCT2: [&str; 9] = ["->", "<-", "<>", "<=", ">=", "=~", "..", "::", "!="];
const PUNCT1: &str = "()[]{},.:;=<>+-*/%^|!?&";

pub fn tokenize(q: &str) -> Result<Vec<Token>, String> {
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
                .ok_or_else(|| format!("unterminated comment at byte {i}"))?;
        } else if c == b'\'' || c == b'"' {
            let start = i;
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(format!("unterminated string literal at byte {start}")),
                    Some(b'\\') => i += 2,
                    Some(x) if *x == c => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push(Token { tok: Tok::Str, start, end: i });
        } else if c == b'`' {
            let start = i;
            let close = q[i + 1..]
                .find('`')
                .ok_or_else(|| format!("unterminated `quoted name` at byte {start}"))?;
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
            out.push(Token { tok: Tok::Num, start, end: i });
        } else if c == b'$' || c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 {
            let start = i;
            i += if c == b'$' { 1 } else { 0 };
            while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric() || b[i] >= 0x80) {
                i += 1;
            }
            let text = &q[start..i];
            let tok = match text.strip_prefix('$') {
                Some("") => return Err(format!("a lone `$` at byte {start}")),
                Some(name) => Tok::Param(name.to_string()),
                None => Tok::Ident(text.to_string()),
            };
            out.push(Token { tok, start, end: i });
        } else if let Some(p) = PUNCT2.iter().find(|p| q[i..].starts_with(**p)) {
            out.push(Token { tok: Tok::Punct(p), start: i, end: i + 2 });
            i += 2;
        } else if let Some(n) = PUNCT1.find(c as char) {
            out.push(Token {
                tok: Tok::Punct(&PUNCT1[n..n + 1]),
                start: i,
                end: i + 1,
            });
            i += 1;
        } else {
            return Err(format!("unexpected character {:?} at byte {i}", c as char));
        }
    }
    Ok(out)
}

/// Words that write, change the schema or reach outside the database.
const WRITE_WORDS: [&str; 22] = [
    "CREATE", "MERGE", "SET", "DELETE", "DETACH", "REMOVE", "DROP", "ALTER", "COPY", "LOAD",
    "INSTALL", "UNINSTALL", "ATTACH", "USE", "BEGIN", "COMMIT", "ROLLBACK", "CHECKPOINT", "EXPORT",
    "IMPORT", "TRUNCATE", "FOREACH",
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
pub fn check_read_only(tokens: &[Token]) -> Result<(), String> {
    for (i, t) in tokens.iter().enumerate() {
        let Tok::Ident(word) = &t.tok else { continue };
        let prev_is = |p: &str| i > 0 && tokens[i - 1].is(p);
        let next_is = |p: &str| tokens.get(i + 1).is_some_and(|n| n.is(p));
        if prev_is(".") || prev_is(":") || next_is(":") {
            continue;
        }
        if let Some(w) = WRITE_WORDS.iter().find(|w| word.eq_ignore_ascii_case(w)) {
            return Err(format!(
                "/query is read-only: {w} is refused (write with POST /graph/ingest)"
            ));
        }
        if word.eq_ignore_ascii_case("CALL") {
            let proc = tokens.get(i + 1).and_then(Token::ident).unwrap_or("");
            if !READ_PROCEDURES.iter().any(|p| proc.eq_ignore_ascii_case(p)) {
                return Err(format!(
                    "/query is read-only: CALL {proc} is refused (allowed: {})",
                    READ_PROCEDURES.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Aggregate functions Kuzu knows; any of them outside the supported whole-item forms makes a
/// query unmergeable.
const AGGREGATES: [&str; 7] = ["count", "count_star", "sum", "avg", "min", "max", "collect"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
}

/// One RETURN item of a mergeable query.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A grouping key (or, without aggregates, just a column).
    Key(String),
    /// `func(arg)` as a whole item; `arg` is `*` for `count(*)`.
    Agg(Agg, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Index into the shard query's columns (visible items first, then hidden sort columns).
    pub column: usize,
    pub descending: bool,
}

/// How to run a mergeable query on every shard and combine the answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The query each shard runs.
    pub shard_cypher: String,
    /// The user's MATCH .. RETURN with `LIMIT 0`: run on one shard for Kuzu's column names.
    pub names_cypher: String,
    /// The user's column names.
    pub columns: Vec<String>,
    pub items: Vec<Item>,
    pub distinct: bool,
    /// Hidden sort columns appended after the visible ones (dropped after merging).
    pub hidden: usize,
    pub order: Vec<SortKey>,
    pub skip: u64,
    pub limit: Option<u64>,
}

impl Plan {
    pub fn has_aggregates(&self) -> bool {
        self.items.iter().any(|i| matches!(i, Item::Agg(..)))
    }
}

/// Why a query's shape cannot be merged exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmergeable(pub String);

impl fmt::Display for Unmergeable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this query cannot be merged across shards exactly: {}. Use \"merge\": \"per_shard\" \
             for per-shard answers, or see the README for the shapes /query merges",
            self.0
        )
    }
}

fn nope<T>(why: impl Into<String>) -> Result<T, Unmergeable> {
    Err(Unmergeable(why.into()))
}

/// A node or relation pattern element, as parsed from `(var:Label {..})` / `[var:Label {..}]`.
struct Element {
    var: Option<String>,
    label: Option<String>,
    /// Source text of the `{...}` property map, if any.
    props: Option<(usize, usize)>,
}

/// Analyses a read-only query for a global merge. Supported, exactly:
///
/// `MATCH <pattern> [WHERE ..] RETURN [DISTINCT] items [ORDER BY ..] [SKIP n] [LIMIT n]`
///
/// - `<pattern>` is one node with a label (`Entity`, `Chunk`, `Community`, `Document`) or one
///   directed relation `(a:Entity)-[r:RELATED]->(b:Entity)` (either arrow direction). Every
///   item lives in one shard, so the node case is a partition; a relation is stored with both of
///   its endpoints, so it is counted only in the shard of its source, where the target is at
///   best a placeholder: only the target's `id` may be used.
/// - RETURN items are expressions (group keys) or whole-item `count(*)`, `count(x)`,
///   `count(DISTINCT x)`, `sum(x)`, `min(x)`, `max(x)`, `avg(x)`.
/// - ORDER BY refers to RETURN items (by alias or text) or, without aggregates and DISTINCT, to
///   any expression. SKIP and LIMIT are integers or parameters.
pub fn analyze(
    q: &str,
    tokens: &[Token],
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<Plan, Unmergeable> {
    let mut t: Vec<&Token> = tokens.iter().collect();
    if t.last().is_some_and(|x| x.is(";")) {
        t.pop();
    }
    // Depth of every token (brackets of any kind) and the top-level clause keywords.
    let mut depth = 0i32;
    let mut depths = Vec::with_capacity(t.len());
    for tok in &t {
        if tok.is(")") || tok.is("]") || tok.is("}") {
            depth -= 1;
        }
        depths.push(depth);
        if tok.is("(") || tok.is("[") || tok.is("{") {
            depth += 1;
        }
    }
    let top = |i: usize, kw: &str| depths[i] == 0 && t[i].is_kw(kw);
    for (i, tok) in t.iter().enumerate() {
        for kw in ["WITH", "UNWIND", "UNION", "CALL", "OPTIONAL"] {
            let operator = kw == "WITH"
                && i > 0
                && (t[i - 1].is_kw("STARTS") || t[i - 1].is_kw("ENDS"));
            if tok.is_kw(kw) && !operator && !(i > 0 && (t[i - 1].is(".") || t[i - 1].is(":"))) {
                return nope(format!("{kw} is not supported in a merged query"));
            }
        }
        if tok.is_kw("MATCH") && i != 0 {
            return nope("only one MATCH clause (and no subqueries) can be merged");
        }
    }
    if t.first().is_none_or(|x| !x.is_kw("MATCH")) {
        return nope("a merged query starts with MATCH");
    }
    let find = |kw: &str, from: usize| (from..t.len()).find(|&i| top(i, kw));
    let ret = find("RETURN", 1).ok_or_else(|| Unmergeable("no RETURN".into()))?;
    if find("RETURN", ret + 1).is_some() {
        return nope("only one RETURN can be merged");
    }
    let where_at = find("WHERE", 1).filter(|&w| w < ret);
    let pat_end = where_at.unwrap_or(ret);
    let order_at = find("ORDER", ret);
    let skip_at = find("SKIP", ret);
    let limit_at = find("LIMIT", ret);
    // Clause order after RETURN: ORDER BY, SKIP, LIMIT.
    let tail: Vec<usize> = [order_at, skip_at, limit_at].into_iter().flatten().collect();
    if tail.windows(2).any(|w| w[0] > w[1]) {
        return nope("ORDER BY, SKIP and LIMIT must come in that order");
    }
    let items_end = tail.first().copied().unwrap_or(t.len());

    // The pattern.
    let pat = &t[1..pat_end];
    let (elements, arrow) = parse_pattern(pat)?;
    let src_text = |a: usize, b: usize| &q[a..b];
    let mut rewritten_pattern = String::new();
    let mut vars = Vec::new();
    for (n, (el, open, close)) in elements.iter().enumerate() {
        let var = el.var.clone().unwrap_or_else(|| format!("_v{n}"));
        vars.push(var.clone());
        let after_var = if el.var.is_some() { open.1 } else { open.0 + 1 };
        let rest = src_text(after_var, close.1);
        let body = &rest[..rest.len() - 1];
        let piece = if n == 1 {
            format!("[{var}{body}]")
        } else {
            format!("({var}{body})")
        };
        if n == 1 {
            rewritten_pattern.push_str(if arrow == Arrow::Right { "-" } else { "<-" });
            rewritten_pattern.push_str(&piece);
            rewritten_pattern.push_str(if arrow == Arrow::Right { "->" } else { "-" });
        } else {
            rewritten_pattern.push_str(&piece);
        }
    }
    let owned_filter;
    if elements.len() == 1 {
        let label = elements[0].0.label.as_deref().unwrap_or("");
        match label {
            "Entity" => owned_filter = Some(format!("{}.stub = false", vars[0])),
            "Chunk" | "Community" | "Document" => owned_filter = None,
            "" => {
                return nope("give the node a label (Entity, Chunk, Community or Document)")
            }
            other => return nope(format!("unknown or internal label {other:?}")),
        }
    } else {
        for (n, (el, _, _)) in elements.iter().enumerate() {
            let want = if n == 1 { "RELATED" } else { "Entity" };
            if let Some(l) = &el.label {
                if l != want {
                    return nope(format!("unknown or internal label {l:?} (expected {want})"));
                }
            }
        }
        let (source, target) = if arrow == Arrow::Right { (0, 2) } else { (2, 0) };
        owned_filter = Some(format!("{}.stub = false", vars[source]));
        // The target is a placeholder in the source's shard: only its id is real.
        let far = &vars[target];
        if let Some((a, b)) = elements[target].0.props {
            let map = tokenize(&q[a..b]).map_err(Unmergeable)?;
            let keys_ok = map
                .iter()
                .enumerate()
                .filter(|(i, _)| map.get(i + 1).is_some_and(|n| n.is(":")))
                .all(|(_, k)| k.ident() == Some("id"));
            if !keys_ok {
                return nope(format!(
                    "only `id` of the relation's target ({far}) can be matched on: its other properties live in its own shard"
                ));
            }
        }
        for i in pat_end..t.len() {
            if t[i].ident() == Some(far.as_str()) && !(i > 0 && t[i - 1].is(".")) {
                let prop = (t.get(i + 1).is_some_and(|x| x.is(".")))
                    .then(|| t.get(i + 2).and_then(|x| x.ident()))
                    .flatten();
                if prop != Some("id") {
                    return nope(format!(
                        "only {far}.id of the relation's target can be used: its other properties live in its own shard (use /graph/neighborhood)"
                    ));
                }
            }
        }
    }
    // No pattern predicates outside the MATCH (they could reach other shards).
    for i in pat_end..t.len() {
        let next = |p: &str| t.get(i + 1).is_some_and(|n| n.is(p));
        let prev = |p: &str| i > 0 && t[i - 1].is(p);
        let pattern_like = t[i].is("->")
            || t[i].is("<-")
            || (t[i].is("-") && prev(")") && (next("[") || next("-")))
            || (t[i].is("-") && prev("]") && next("("));
        if pattern_like {
            return nope("patterns outside the MATCH clause are not supported");
        }
    }

    // RETURN items.
    let mut first_item = ret + 1;
    let distinct = t.get(first_item).is_some_and(|x| x.is_kw("DISTINCT"));
    if distinct {
        first_item += 1;
    }
    let item_ranges = split_commas(&t, &depths, first_item, items_end);
    if item_ranges.is_empty() {
        return nope("RETURN has no items");
    }
    let mut items = Vec::new();
    let mut columns = Vec::new();
    let mut item_exprs = Vec::new();
    for (a, b) in item_ranges {
        let mut end = b;
        let mut alias = None;
        if b >= a + 3 && t[b - 2].is_kw("AS") {
            alias = t[b - 1].ident().map(str::to_string);
            end = b - 2;
        }
        if end == a + 1 && t[a].is("*") {
            return nope("RETURN * cannot be merged; name the columns");
        }
        let text = q[t[a].start..t[end - 1].end].to_string();
        let item = classify(&t[a..end], q)?;
        columns.push(alias.clone().unwrap_or_else(|| text.clone()));
        item_exprs.push((text, alias));
        items.push(item);
    }
    let aggregated = items.iter().any(|i| matches!(i, Item::Agg(..)));

    // ORDER BY.
    let mut order = Vec::new();
    let mut hidden_exprs: Vec<String> = Vec::new();
    if let Some(o) = order_at {
        if !t.get(o + 1).is_some_and(|x| x.is_kw("BY")) {
            return nope("ORDER without BY");
        }
        let end = skip_at.or(limit_at).unwrap_or(t.len());
        for (a, b) in split_commas(&t, &depths, o + 2, end) {
            let mut end = b;
            let mut descending = false;
            if let Some(last) = t.get(b - 1) {
                if last.is_kw("DESC") || last.is_kw("DESCENDING") {
                    descending = true;
                    end -= 1;
                } else if last.is_kw("ASC") || last.is_kw("ASCENDING") {
                    end -= 1;
                }
            }
            if end <= a {
                return nope("empty ORDER BY item");
            }
            let text = &q[t[a].start..t[end - 1].end];
            let norm = normalize(text);
            let found = item_exprs.iter().position(|(expr, alias)| {
                alias.as_deref() == Some(text) || normalize(expr) == norm
            });
            let column = match found {
                Some(c) => c,
                None if aggregated || distinct => {
                    return nope(format!(
                        "ORDER BY {text} must name a RETURN item when the query aggregates or is DISTINCT"
                    ))
                }
                None => {
                    if t[a..end]
                        .iter()
                        .enumerate()
                        .any(|(k, x)| is_aggregate_call(&t[a..end], k, x))
                    {
                        return nope("aggregates in ORDER BY must also be RETURN items");
                    }
                    hidden_exprs.push(text.to_string());
                    items.len() + hidden_exprs.len() - 1
                }
            };
            order.push(SortKey { column, descending });
        }
    }
    let number = |at: Option<usize>, what: &str| -> Result<Option<u64>, Unmergeable> {
        let Some(i) = at else { return Ok(None) };
        let end = [skip_at, limit_at]
            .into_iter()
            .flatten()
            .filter(|&j| j > i)
            .min()
            .unwrap_or(t.len());
        if end != i + 2 {
            return nope(format!("{what} must be an integer or a parameter"));
        }
        let v = match &t[i + 1].tok {
            Tok::Num => q[t[i + 1].start..t[i + 1].end].parse::<u64>().ok(),
            Tok::Param(p) => params.get(p).and_then(|v| v.as_u64()),
            _ => None,
        };
        v.map(Some).ok_or_else(|| {
            Unmergeable(format!("{what} must be a non-negative integer or an integer parameter"))
        })
    };
    let skip = number(skip_at, "SKIP")?.unwrap_or(0);
    let limit = number(limit_at, "LIMIT")?;

    // The shard query.
    let mut sq = format!("MATCH {rewritten_pattern}");
    if where_at.is_some_and(|w| w + 1 >= ret) {
        return nope("empty WHERE");
    }
    let user_where = where_at.map(|w| &q[t[w + 1].start..t[ret - 1].end]);
    match (owned_filter, user_where) {
        (Some(f), Some(w)) => sq.push_str(&format!(" WHERE {f} AND ({w})")),
        (Some(f), None) => sq.push_str(&format!(" WHERE {f}")),
        (None, Some(w)) => sq.push_str(&format!(" WHERE {w}")),
        (None, None) => {}
    }
    sq.push_str(" RETURN ");
    if distinct && !aggregated {
        sq.push_str("DISTINCT ");
    }
    let mut cols = Vec::new();
    for (n, (item, (text, _))) in items.iter().zip(&item_exprs).enumerate() {
        match item {
            Item::Key(_) => cols.push(format!("{text} AS _c{n}")),
            Item::Agg(agg, arg) => match agg {
                Agg::Count => cols.push(format!("count({arg}) AS _c{n}")),
                Agg::CountDistinct => cols.push(format!("collect(DISTINCT {arg}) AS _c{n}")),
                Agg::Sum => cols.push(format!("sum({arg}) AS _c{n}")),
                Agg::Min => cols.push(format!("min({arg}) AS _c{n}")),
                Agg::Max => cols.push(format!("max({arg}) AS _c{n}")),
                Agg::Avg => {
                    cols.push(format!("sum({arg}) AS _c{n}"));
                    cols.push(format!("count({arg}) AS _n{n}"));
                }
            },
        }
    }
    for (n, h) in hidden_exprs.iter().enumerate() {
        cols.push(format!("{h} AS _o{n}"));
    }
    sq.push_str(&cols.join(", "));
    if !aggregated {
        if !order.is_empty() {
            let keys: Vec<String> = order
                .iter()
                .map(|k| {
                    let name = if k.column < items.len() {
                        format!("_c{}", k.column)
                    } else {
                        format!("_o{}", k.column - items.len())
                    };
                    format!("{name}{}", if k.descending { " DESC" } else { "" })
                })
                .collect();
            sq.push_str(&format!(" ORDER BY {}", keys.join(", ")));
        }
        // Each shard returns what could be in the global window.
        if let Some(l) = limit {
            sq.push_str(&format!(" LIMIT {}", l.saturating_add(skip)));
        }
    }
    let names_cypher = format!("{} LIMIT 0", &q[..t[items_end - 1].end]);
    Ok(Plan {
        shard_cypher: sq,
        names_cypher,
        columns,
        items,
        distinct,
        hidden: hidden_exprs.len(),
        order,
        skip,
        limit,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Arrow {
    Right,
    Left,
}

type Span = (usize, usize);

/// Parses `(..)` or `(..)-[..]->(..)` / `(..)<-[..]-(..)`; returns the elements with the byte
/// spans of their opening token (and variable, if any) and closing bracket.
#[allow(clippy::type_complexity)]
fn parse_pattern(p: &[&Token]) -> Result<(Vec<(Element, Span, Span)>, Arrow), Unmergeable> {
    let mut i = 0;
    let mut out = Vec::new();
    let mut arrow = Arrow::Right;
    let element = |i: &mut usize, open: &str, close: &str| -> Result<(Element, Span, Span), Unmergeable> {
        if !p.get(*i).is_some_and(|x| x.is(open)) {
            return nope("the MATCH pattern must be one node `(v:Label)` or one relation `(a)-[r]->(b)`");
        }
        let open_tok = p[*i];
        *i += 1;
        let mut el = Element { var: None, label: None, props: None };
        let mut open_span = (open_tok.start, open_tok.end);
        if let Some(v) = p.get(*i).and_then(|x| x.ident()) {
            if !p[*i].is(":") {
                el.var = Some(v.to_string());
                open_span = (open_tok.start, p[*i].end);
                *i += 1;
            }
        }
        if p.get(*i).is_some_and(|x| x.is(":")) {
            el.label = p.get(*i + 1).and_then(|x| x.ident()).map(str::to_string);
            if el.label.is_none() {
                return nope("a label must follow `:`");
            }
            *i += 2;
            if p.get(*i).is_some_and(|x| x.is("|") || x.is(":")) {
                return nope("one label per pattern element");
            }
        }
        if p.get(*i).is_some_and(|x| x.is("*")) {
            return nope("variable-length relations are not merged (use /graph/neighborhood or /graph/path)");
        }
        if p.get(*i).is_some_and(|x| x.is("{")) {
            let start = p[*i].start;
            let mut d = 0;
            loop {
                let Some(x) = p.get(*i) else {
                    return nope("unclosed property map");
                };
                if x.is("{") {
                    d += 1;
                } else if x.is("}") {
                    d -= 1;
                    if d == 0 {
                        el.props = Some((start, x.end));
                        *i += 1;
                        break;
                    }
                }
                *i += 1;
            }
        }
        match p.get(*i) {
            Some(x) if x.is(close) => {
                let span = (x.start, x.end);
                *i += 1;
                Ok((el, open_span, span))
            }
            _ => nope("the MATCH pattern must be one node `(v:Label)` or one relation `(a)-[r]->(b)`"),
        }
    };
    out.push(element(&mut i, "(", ")")?);
    if i < p.len() {
        let left = p[i].is("<-");
        if !(left || p[i].is("-")) {
            return nope("the MATCH pattern must be one node or one relation (no commas or path variables)");
        }
        i += 1;
        let rel = element(&mut i, "[", "]")?;
        let right = p.get(i).is_some_and(|x| x.is("->"));
        if left == right || !(right || p.get(i).is_some_and(|x| x.is("-"))) {
            return nope("the relation must have one direction: (a)-[r]->(b) or (a)<-[r]-(b)");
        }
        arrow = if right { Arrow::Right } else { Arrow::Left };
        i += 1;
        out.push(rel);
        out.push(element(&mut i, "(", ")")?);
    }
    if i != p.len() {
        return nope("the MATCH pattern must be one node or one relation (no commas or path variables)");
    }
    Ok((out, arrow))
}

fn split_commas(t: &[&Token], depths: &[i32], from: usize, to: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = from;
    for i in from..to {
        if depths[i] == depths[from] && t[i].is(",") {
            out.push((start, i));
            start = i + 1;
        }
    }
    if start < to {
        out.push((start, to));
    }
    out
}

fn is_aggregate_call(t: &[&Token], k: usize, x: &Token) -> bool {
    matches!(&x.tok, Tok::Ident(name) if AGGREGATES.iter().any(|a| name.eq_ignore_ascii_case(a)))
        && t.get(k + 1).is_some_and(|n| n.is("("))
        && !(k > 0 && t[k - 1].is("."))
}

/// A RETURN item: a whole aggregate call or an expression without aggregates.
fn classify(t: &[&Token], q: &str) -> Result<Item, Unmergeable> {
    let calls: Vec<usize> = (0..t.len())
        .filter(|&k| is_aggregate_call(t, k, t[k]))
        .collect();
    if calls.is_empty() {
        return Ok(Item::Key(q[t[0].start..t[t.len() - 1].end].to_string()));
    }
    let whole = calls == [0] && t.len() >= 3 && t[t.len() - 1].is(")");
    if !whole {
        return nope(format!(
            "{} mixes an aggregate with other expressions; only whole count/sum/min/max/avg items merge",
            &q[t[0].start..t[t.len() - 1].end]
        ));
    }
    let name = t[0].ident().unwrap_or("").to_ascii_lowercase();
    let inner = &t[2..t.len() - 1];
    let distinct = inner.first().is_some_and(|x| x.is_kw("DISTINCT"));
    let arg_toks = if distinct { &inner[1..] } else { inner };
    if arg_toks.is_empty() {
        return nope(format!("{name}() needs an argument"));
    }
    let arg = q[arg_toks[0].start..arg_toks[arg_toks.len() - 1].end].to_string();
    let agg = match (name.as_str(), distinct) {
        ("count", false) => Agg::Count,
        ("count", true) => Agg::CountDistinct,
        ("sum", false) => Agg::Sum,
        ("min", _) => Agg::Min,
        ("max", _) => Agg::Max,
        ("avg", false) => Agg::Avg,
        (other, true) => return nope(format!("{other}(DISTINCT ..) is not merged")),
        (other, false) => return nope(format!("{other}() is not merged across shards")),
    };
    Ok(Item::Agg(agg, arg))
}

/// Whitespace-insensitive, case-sensitive comparison form of an expression.
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join("")
}

#[cfg(test)]
mod tests;
