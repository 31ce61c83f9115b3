//! The merge plan of a read-only query: whether its per-shard answers can be merged into the
//! answer one database holding the whole graph would give — and if so, the query each shard
//! runs and how to combine the rows. One family of shapes is recognised exactly (see
//! [`analyze`]); everything else is refused with a reason, so torua never returns a silently
//! wrong global answer.

use std::fmt;

use super::cypher::{tokenize, Tok, Token};

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
    Key,
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

/// Positions of the top-level clauses (token indexes).
struct Clauses {
    ret: usize,
    where_at: Option<usize>,
    order_at: Option<usize>,
    skip_at: Option<usize>,
    limit_at: Option<usize>,
    /// End of the RETURN items.
    items_end: usize,
}

/// The query's tokens with the bracket depth of each.
struct Query<'q> {
    q: &'q str,
    t: Vec<&'q Token>,
    depths: Vec<i32>,
}

impl<'q> Query<'q> {
    fn new(q: &'q str, tokens: &'q [Token]) -> Self {
        let mut t: Vec<&Token> = tokens.iter().collect();
        if t.last().is_some_and(|x| x.is(";")) {
            t.pop();
        }
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
        Query { q, t, depths }
    }

    /// Source text of tokens `a..b`.
    fn text(&self, a: usize, b: usize) -> &'q str {
        &self.q[self.t[a].start..self.t[b - 1].end]
    }

    fn find_top(&self, kw: &str, from: usize) -> Option<usize> {
        (from..self.t.len()).find(|&i| self.depths[i] == 0 && self.t[i].is_kw(kw))
    }

    /// One MATCH, one RETURN, no multi-part or union clauses; where each clause is.
    fn clauses(&self) -> Result<Clauses, Unmergeable> {
        let t = &self.t;
        for (i, tok) in t.iter().enumerate() {
            let after_dot = i > 0 && (t[i - 1].is(".") || t[i - 1].is(":"));
            for kw in ["WITH", "UNWIND", "UNION", "CALL", "OPTIONAL"] {
                let operator =
                    kw == "WITH" && i > 0 && (t[i - 1].is_kw("STARTS") || t[i - 1].is_kw("ENDS"));
                if tok.is_kw(kw) && !operator && !after_dot {
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
        let ret = self
            .find_top("RETURN", 1)
            .ok_or_else(|| Unmergeable("no RETURN".into()))?;
        if self.find_top("RETURN", ret + 1).is_some() {
            return nope("only one RETURN can be merged");
        }
        let where_at = self.find_top("WHERE", 1).filter(|&w| w < ret);
        if where_at.is_some_and(|w| w + 1 >= ret) {
            return nope("empty WHERE");
        }
        let order_at = self.find_top("ORDER", ret);
        let skip_at = self.find_top("SKIP", ret);
        let limit_at = self.find_top("LIMIT", ret);
        let tail: Vec<usize> = [order_at, skip_at, limit_at]
            .into_iter()
            .flatten()
            .collect();
        if tail.windows(2).any(|w| w[0] > w[1]) {
            return nope("ORDER BY, SKIP and LIMIT must come in that order");
        }
        Ok(Clauses {
            ret,
            where_at,
            order_at,
            skip_at,
            limit_at,
            items_end: tail.first().copied().unwrap_or(t.len()),
        })
    }

    /// The MATCH pattern rewritten with a variable on every element, and the filter that
    /// keeps each row in exactly one shard: an entity where it is not a stub, a relation in
    /// its source's shard (where its target may be a stub: only the target's id may be used
    /// in the rest of the query, from `rest` on).
    fn placement(&self, pat_end: usize) -> Result<(String, Option<String>), Unmergeable> {
        let (q, t) = (self.q, &self.t);
        let (elements, arrow) = parse_pattern(&t[1..pat_end])?;
        let mut pattern = String::new();
        let mut vars = Vec::new();
        for (n, (el, open, close)) in elements.iter().enumerate() {
            let var = el.var.clone().unwrap_or_else(|| format!("_v{n}"));
            let after_var = if el.var.is_some() { open.1 } else { open.0 + 1 };
            // Label and properties as written, without the closing bracket.
            let body = &q[after_var..close.1 - 1];
            if n == 1 {
                let (l, r) = if arrow == Arrow::Right {
                    ("-", "->")
                } else {
                    ("<-", "-")
                };
                pattern.push_str(&format!("{l}[{var}{body}]{r}"));
            } else {
                pattern.push_str(&format!("({var}{body})"));
            }
            vars.push(var);
        }
        if elements.len() == 1 {
            return match elements[0].0.label.as_deref().unwrap_or("") {
                "Entity" => Ok((pattern, Some(format!("{}.stub = false", vars[0])))),
                "Chunk" | "Community" | "Document" => Ok((pattern, None)),
                "" => nope("give the node a label (Entity, Chunk, Community or Document)"),
                other => nope(format!("unknown or internal label {other:?}")),
            };
        }
        for (n, (el, _, _)) in elements.iter().enumerate() {
            let want = if n == 1 { "RELATED" } else { "Entity" };
            if let Some(l) = el.label.as_ref().filter(|l| *l != want) {
                return nope(format!("unknown or internal label {l:?} (expected {want})"));
            }
        }
        let (source, target) = if arrow == Arrow::Right {
            (0, 2)
        } else {
            (2, 0)
        };
        let far = &vars[target];
        if let Some((a, b)) = elements[target].0.props {
            let map = tokenize(&q[a..b]).map_err(|e| Unmergeable(e.0))?;
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
                        "only {far}.id of the relation's target can be used: its other properties live in its own shard (r.target has it too; use /graph/neighborhood for more)"
                    ));
                }
            }
        }
        Ok((pattern, Some(format!("{}.stub = false", vars[source]))))
    }

    /// No pattern predicates outside the MATCH: they could reach other shards.
    fn no_patterns_after(&self, from: usize) -> Result<(), Unmergeable> {
        let t = &self.t;
        for i in from..t.len() {
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
        Ok(())
    }

    /// RETURN items `a..b` (after DISTINCT): each item with its text and alias.
    fn return_items(
        &self,
        a: usize,
        b: usize,
    ) -> Result<Vec<(Item, String, Option<String>)>, Unmergeable> {
        let t = &self.t;
        let ranges = split_commas(t, &self.depths, a, b);
        if ranges.is_empty() {
            return nope("RETURN has no items");
        }
        let mut out = Vec::new();
        for (a, b) in ranges {
            let mut end = b;
            let mut alias = None;
            if b >= a + 3 && t[b - 2].is_kw("AS") {
                alias = t[b - 1].ident().map(str::to_string);
                end = b - 2;
            }
            if end == a + 1 && t[a].is("*") {
                return nope("RETURN * cannot be merged; name the columns");
            }
            let item = classify(&t[a..end], self.q)?;
            out.push((item, self.text(a, end).to_string(), alias));
        }
        Ok(out)
    }

    /// ORDER BY items `a..b`: each a RETURN item (by alias or text) or, when `hidden_ok`, any
    /// expression, returned as an extra sort column numbered after the `items`.
    fn order_by(
        &self,
        a: usize,
        b: usize,
        items: &[(Item, String, Option<String>)],
        hidden_ok: bool,
    ) -> Result<(Vec<SortKey>, Vec<String>), Unmergeable> {
        let t = &self.t;
        let mut order = Vec::new();
        let mut hidden: Vec<String> = Vec::new();
        for (a, b) in split_commas(t, &self.depths, a, b) {
            let mut end = b;
            let mut descending = false;
            if t[b - 1].is_kw("DESC") || t[b - 1].is_kw("DESCENDING") {
                descending = true;
                end -= 1;
            } else if t[b - 1].is_kw("ASC") || t[b - 1].is_kw("ASCENDING") {
                end -= 1;
            }
            if end <= a {
                return nope("empty ORDER BY item");
            }
            let text = self.text(a, end);
            let found = items.iter().position(|(_, expr, alias)| {
                alias.as_deref() == Some(text) || normalize(expr) == normalize(text)
            });
            let column = match found {
                Some(c) => c,
                None if !hidden_ok => {
                    return nope(format!(
                        "ORDER BY {text} must name a RETURN item when the query aggregates or is DISTINCT"
                    ))
                }
                None => {
                    let sub = &t[a..end];
                    if sub.iter().enumerate().any(|(k, x)| is_aggregate_call(sub, k, x)) {
                        return nope("aggregates in ORDER BY must also be RETURN items");
                    }
                    hidden.push(text.to_string());
                    items.len() + hidden.len() - 1
                }
            };
            order.push(SortKey { column, descending });
        }
        Ok((order, hidden))
    }

    /// The integer after SKIP/LIMIT at `at` (a literal or an integer parameter).
    fn count_after(
        &self,
        at: Option<usize>,
        next_clause: usize,
        what: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<u64>, Unmergeable> {
        let Some(i) = at else { return Ok(None) };
        if next_clause != i + 2 {
            return nope(format!("{what} must be an integer or a parameter"));
        }
        let v = match &self.t[i + 1].tok {
            Tok::Num => self.text(i + 1, i + 2).parse::<u64>().ok(),
            Tok::Param(p) => params.get(p).and_then(|v| v.as_u64()),
            _ => None,
        };
        v.map(Some).ok_or_else(|| {
            Unmergeable(format!(
                "{what} must be a non-negative integer or an integer parameter"
            ))
        })
    }
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
    let query = Query::new(q, tokens);
    let c = query.clauses()?;
    let pat_end = c.where_at.unwrap_or(c.ret);
    let (pattern, owned) = query.placement(pat_end)?;
    query.no_patterns_after(pat_end)?;
    let distinct = query.t.get(c.ret + 1).is_some_and(|x| x.is_kw("DISTINCT"));
    let first_item = c.ret + 1 + usize::from(distinct);
    let items = query.return_items(first_item, c.items_end)?;
    let aggregated = items.iter().any(|(i, _, _)| matches!(i, Item::Agg(..)));
    let (order, hidden) = match c.order_at {
        Some(o) if !query.t.get(o + 1).is_some_and(|x| x.is_kw("BY")) => {
            return nope("ORDER without BY")
        }
        Some(o) => {
            let end = c.skip_at.or(c.limit_at).unwrap_or(query.t.len());
            query.order_by(o + 2, end, &items, !aggregated && !distinct)?
        }
        None => (Vec::new(), Vec::new()),
    };
    let after_skip = c.limit_at.unwrap_or(query.t.len());
    let skip = query
        .count_after(c.skip_at, after_skip, "SKIP", params)?
        .unwrap_or(0);
    let limit = query.count_after(c.limit_at, query.t.len(), "LIMIT", params)?;
    let user_where = c.where_at.map(|w| query.text(w + 1, c.ret));
    let shard_cypher = shard_query(
        &pattern, owned, user_where, distinct, &items, &hidden, &order, skip, limit,
    );
    Ok(Plan {
        shard_cypher,
        names_cypher: format!("{} LIMIT 0", &q[..query.t[c.items_end - 1].end]),
        columns: items
            .iter()
            .map(|(_, text, alias)| alias.clone().unwrap_or_else(|| text.clone()))
            .collect(),
        distinct,
        hidden: hidden.len(),
        items: items.into_iter().map(|(i, _, _)| i).collect(),
        order,
        skip,
        limit,
    })
}

/// The query each shard runs: the pattern with the placement filter and the user's WHERE;
/// every item aliased `_cN` (aggregates as their partials, avg as sum `_cN` and count `_nN`),
/// hidden sort columns `_oN`; without aggregates, the ORDER BY and a LIMIT of skip + limit
/// (each shard's share of the global window).
#[allow(clippy::too_many_arguments)]
fn shard_query(
    pattern: &str,
    owned: Option<String>,
    user_where: Option<&str>,
    distinct: bool,
    items: &[(Item, String, Option<String>)],
    hidden: &[String],
    order: &[SortKey],
    skip: u64,
    limit: Option<u64>,
) -> String {
    let aggregated = items.iter().any(|(i, _, _)| matches!(i, Item::Agg(..)));
    let mut sq = format!("MATCH {pattern}");
    match (owned, user_where) {
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
    for (n, (item, text, _)) in items.iter().enumerate() {
        match item {
            Item::Key => cols.push(format!("{text} AS _c{n}")),
            Item::Agg(Agg::Count, arg) => cols.push(format!("count({arg}) AS _c{n}")),
            Item::Agg(Agg::CountDistinct, arg) => {
                cols.push(format!("collect(DISTINCT {arg}) AS _c{n}"))
            }
            Item::Agg(Agg::Sum, arg) => cols.push(format!("sum({arg}) AS _c{n}")),
            Item::Agg(Agg::Min, arg) => cols.push(format!("min({arg}) AS _c{n}")),
            Item::Agg(Agg::Max, arg) => cols.push(format!("max({arg}) AS _c{n}")),
            Item::Agg(Agg::Avg, arg) => {
                cols.push(format!("sum({arg}) AS _c{n}"));
                cols.push(format!("count({arg}) AS _n{n}"));
            }
        }
    }
    for (n, h) in hidden.iter().enumerate() {
        cols.push(format!("{h} AS _o{n}"));
    }
    sq.push_str(&cols.join(", "));
    if aggregated {
        return sq; // every group comes back; the merge orders and cuts
    }
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
    if let Some(l) = limit {
        sq.push_str(&format!(" LIMIT {}", l.saturating_add(skip)));
    }
    sq
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
    let element =
        |i: &mut usize, open: &str, close: &str| -> Result<(Element, Span, Span), Unmergeable> {
            if !p.get(*i).is_some_and(|x| x.is(open)) {
                return nope(
                    "the MATCH pattern must be one node `(v:Label)` or one relation `(a)-[r]->(b)`",
                );
            }
            let open_tok = p[*i];
            *i += 1;
            let mut el = Element {
                var: None,
                label: None,
                props: None,
            };
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
                return nope(
                "variable-length relations are not merged (use /graph/neighborhood or /graph/path)",
            );
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
                _ => nope(
                    "the MATCH pattern must be one node `(v:Label)` or one relation `(a)-[r]->(b)`",
                ),
            }
        };
    out.push(element(&mut i, "(", ")")?);
    if i < p.len() {
        let left = p[i].is("<-");
        if !(left || p[i].is("-")) {
            return nope(
                "the MATCH pattern must be one node or one relation (no commas or path variables)",
            );
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
        return nope(
            "the MATCH pattern must be one node or one relation (no commas or path variables)",
        );
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
        return Ok(Item::Key);
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
