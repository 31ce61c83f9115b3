//! Merging per-shard rows into the answer of one database holding the whole graph: partial
//! aggregates combined per group, then ORDER BY, SKIP and LIMIT applied globally. Values are
//! compared the way Kuzu orders them (numbers by value, strings by bytes, null largest).

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{json, Value};

use super::plan::{Agg, Item, Plan};
use crate::error::Error;

/// Kuzu's ordering: null sorts after every value (last ascending, first descending).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Bool(_) => 0,
            Value::Number(_) => 1,
            Value::String(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = compare(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(_), Value::Object(_)) => a.to_string().cmp(&b.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Merges shard rows (each in the plan's shard-query column layout) into the user's rows.
pub fn merge(plan: &Plan, shard_rows: Vec<Vec<Vec<Value>>>) -> Result<Vec<Vec<Value>>, Error> {
    let mut rows = if plan.has_aggregates() {
        aggregate(plan, shard_rows)?
    } else {
        let mut all: Vec<Vec<Value>> = shard_rows.into_iter().flatten().collect();
        if plan.distinct {
            let mut seen = std::collections::HashSet::new();
            all.retain(|r| seen.insert(Value::Array(r.clone()).to_string()));
        }
        all
    };
    if !plan.order.is_empty() {
        rows.sort_by(|a, b| {
            for k in &plan.order {
                let (x, y) = (
                    a.get(k.column).unwrap_or(&Value::Null),
                    b.get(k.column).unwrap_or(&Value::Null),
                );
                let c = compare(x, y);
                let c = if k.descending { c.reverse() } else { c };
                if c != Ordering::Equal {
                    return c;
                }
            }
            Ordering::Equal
        });
    }
    let skip = usize::try_from(plan.skip).unwrap_or(usize::MAX);
    let mut rows: Vec<Vec<Value>> = rows.into_iter().skip(skip).collect();
    if let Some(l) = plan.limit {
        rows.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    let visible = plan.items.len();
    for r in &mut rows {
        r.truncate(visible);
    }
    Ok(rows)
}

/// A partial aggregate being combined.
enum Acc {
    Count(i64),
    Sum(Option<Value>),
    Min(Value),
    Max(Value),
    Avg(f64, i64),
    Distinct(Vec<Value>, std::collections::HashSet<String>),
}

fn add_numbers(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => match x.checked_add(y) {
            Some(s) => json!(s),
            None => json!(x as f64 + y as f64),
        },
        _ => json!(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
    }
}

fn aggregate(plan: &Plan, shard_rows: Vec<Vec<Vec<Value>>>) -> Result<Vec<Vec<Value>>, Error> {
    let mut order: Vec<(Vec<Value>, Vec<Acc>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let fresh = || -> Vec<Acc> {
        plan.items
            .iter()
            .filter_map(|i| match i {
                Item::Key => None,
                Item::Agg(a, _) => Some(match a {
                    Agg::Count => Acc::Count(0),
                    Agg::Sum => Acc::Sum(None),
                    Agg::Min => Acc::Min(Value::Null),
                    Agg::Max => Acc::Max(Value::Null),
                    Agg::Avg => Acc::Avg(0.0, 0),
                    Agg::CountDistinct => Acc::Distinct(Vec::new(), Default::default()),
                }),
            })
            .collect()
    };
    let grouped = plan.items.iter().any(|i| matches!(i, Item::Key));
    for row in shard_rows.into_iter().flatten() {
        // Walk the shard columns: keys and aggregates in item order, avg taking two.
        let mut col = 0;
        let mut key = Vec::new();
        let mut partials = Vec::new();
        for item in &plan.items {
            let v = row.get(col).cloned().unwrap_or(Value::Null);
            col += 1;
            match item {
                Item::Key => key.push(v),
                Item::Agg(Agg::Avg, _) => {
                    let n = row.get(col).cloned().unwrap_or(Value::Null);
                    col += 1;
                    partials.push((v, n));
                }
                Item::Agg(..) => partials.push((v, Value::Null)),
            }
        }
        let k = Value::Array(key.clone()).to_string();
        let slot = *index.entry(k).or_insert_with(|| {
            order.push((key, fresh()));
            order.len() - 1
        });
        let accs = &mut order[slot].1;
        for (acc, (v, n)) in accs.iter_mut().zip(partials) {
            match acc {
                Acc::Count(c) => *c += v.as_i64().unwrap_or(0),
                Acc::Sum(s) => {
                    if !v.is_null() {
                        *s = Some(match s.take() {
                            None => v,
                            Some(prev) => add_numbers(&prev, &v),
                        });
                    }
                }
                Acc::Min(m) => {
                    if m.is_null() || (!v.is_null() && compare(&v, m) == Ordering::Less) {
                        *m = v;
                    }
                }
                Acc::Max(m) => {
                    if m.is_null() || (!v.is_null() && compare(&v, m) == Ordering::Greater) {
                        *m = v;
                    }
                }
                Acc::Avg(sum, count) => {
                    *sum += v.as_f64().unwrap_or(0.0);
                    *count += n.as_i64().unwrap_or(0);
                }
                Acc::Distinct(items, seen) => {
                    // Over no rows Kuzu's collect gives null.
                    let list = match v {
                        Value::Array(list) => list,
                        Value::Null => Vec::new(),
                        _ => {
                            return Err(Error::Internal(
                                "a shard answered count(DISTINCT) without a list".into(),
                            ))
                        }
                    };
                    for x in list.into_iter().filter(|x| !x.is_null()) {
                        if seen.insert(x.to_string()) {
                            items.push(x);
                        }
                    }
                }
            }
        }
    }
    // Without grouping keys there is exactly one row, even over nothing.
    if !grouped && order.is_empty() {
        order.push((Vec::new(), fresh()));
    }
    Ok(order
        .into_iter()
        .map(|(key, accs)| {
            let mut keys = key.into_iter();
            let mut accs = accs.into_iter();
            plan.items
                .iter()
                .map(|item| match item {
                    Item::Key => keys.next().unwrap_or(Value::Null),
                    Item::Agg(..) => match accs.next() {
                        Some(Acc::Count(c)) => json!(c),
                        Some(Acc::Sum(s)) => s.unwrap_or(Value::Null),
                        Some(Acc::Min(m)) | Some(Acc::Max(m)) => m,
                        Some(Acc::Avg(_, 0)) => Value::Null,
                        Some(Acc::Avg(sum, n)) => json!(sum / n as f64),
                        Some(Acc::Distinct(items, _)) => json!(items.len()),
                        None => Value::Null,
                    },
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    //! Merging hand-made shard answers for plans made from real query texts.
    use serde_json::{json, Value};

    use super::*;
    use crate::query::cypher::tokenize;
    use crate::query::plan::analyze;

    fn plan(q: &str) -> Plan {
        analyze(q, &tokenize(q).unwrap(), &serde_json::Map::new()).unwrap()
    }

    fn rows(v: Value) -> Vec<Vec<Value>> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn nulls_sort_last_and_numbers_by_value() {
        let mut v = vec![json!(null), json!(2.5), json!(2), json!("b"), json!(10)];
        v.sort_by(compare);
        assert_eq!(
            v,
            vec![json!(2), json!(2.5), json!(10), json!("b"), json!(null)]
        );
        assert_eq!(compare(&json!("B"), &json!("a")), Ordering::Less); // bytes, not locale
    }

    #[test]
    fn groups_combine_partials_then_order_and_cut() {
        let p = plan(
            "MATCH (e:Entity) RETURN e.type AS t, count(*) AS n, avg(e.degree) AS a, \
             count(DISTINCT e.title) AS titles ORDER BY n DESC, t LIMIT 2",
        );
        // Shard columns: t, n, sum, count (avg), collected titles.
        let a = rows(json!([["P", 2, 10, 2, ["x", "y"]], ["O", 1, 4, 1, ["z"]]]));
        let b = rows(json!([["P", 1, 2, 1, ["x"]], ["G", 3, 3, 3, ["w"]]]));
        let merged = merge(&p, vec![a, b]).unwrap();
        assert_eq!(merged, rows(json!([["G", 3, 1.0, 1], ["P", 3, 4.0, 2]])));
    }

    #[test]
    fn an_ungrouped_aggregate_over_no_rows_is_one_row() {
        let p = plan("MATCH (e:Entity) WHERE e.degree > 99 RETURN count(*), sum(e.degree), count(DISTINCT e.type), avg(e.degree)");
        let empty = rows(json!([[0, null, null, null, 0]]));
        let merged = merge(&p, vec![empty.clone(), empty]).unwrap();
        assert_eq!(merged, rows(json!([[0, null, 0, null]])));
    }

    #[test]
    fn a_window_spans_shards_and_hidden_sort_columns_are_dropped() {
        let p = plan("MATCH (e:Entity) RETURN e.id ORDER BY e.degree DESC, e.id SKIP 1 LIMIT 2");
        // Each shard sent its first skip + limit rows: id, hidden degree.
        let a = rows(json!([["a", 9], ["c", 5], ["d", 1]]));
        let b = rows(json!([["b", 9], ["e", 7], ["f", 2]]));
        // a 9, b 9, e 7, c 5, f 2, d 1 → skip a, take b and e.
        assert_eq!(merge(&p, vec![a, b]).unwrap(), rows(json!([["b"], ["e"]])));
    }

    #[test]
    fn distinct_rows_are_deduplicated_across_shards() {
        let p = plan("MATCH (e:Entity) RETURN DISTINCT e.type ORDER BY e.type");
        let a = rows(json!([["A"], ["B"]]));
        let b = rows(json!([["B"], ["C"]]));
        assert_eq!(
            merge(&p, vec![a, b]).unwrap(),
            rows(json!([["A"], ["B"], ["C"]]))
        );
    }
}
