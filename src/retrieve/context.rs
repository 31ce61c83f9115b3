//! The context an LLM reads: GraphRAG's pipe-separated tables (`-----Reports-----`,
//! `-----Entities-----`, `-----Relationships-----`, `-----Sources-----`), each filled with its
//! rows in rank order while they fit the section's token budget.

use super::tokens::Tokenizer;

/// One section: a title line, a header line and rows.
#[derive(Debug, Clone)]
pub struct Table {
    title: &'static str,
    header: &'static str,
    pub rows: Vec<String>,
    /// Tokens of the section as counted while filling (title, header and rows counted apart).
    pub tokens: usize,
}

impl Table {
    pub fn reports() -> Table {
        Table::new("-----Reports-----", "id|title|content")
    }
    pub fn entities() -> Table {
        Table::new(
            "-----Entities-----",
            "id|entity|description|number of relationships",
        )
    }
    pub fn relations() -> Table {
        Table::new(
            "-----Relationships-----",
            "id|source|target|description|weight",
        )
    }
    pub fn sources() -> Table {
        Table::new("-----Sources-----", "id|text")
    }

    fn new(title: &'static str, header: &'static str) -> Table {
        Table {
            title,
            header,
            rows: Vec::new(),
            tokens: 0,
        }
    }

    /// Adds rows in order while the section stays within `budget` tokens; the first row that
    /// does not fit ends the section. Returns how many rows were added.
    pub fn fill(
        &mut self,
        rows: impl IntoIterator<Item = String>,
        budget: usize,
        tok: Tokenizer,
    ) -> usize {
        let mut used = if self.rows.is_empty() {
            tok.count(&format!("{}\n{}\n", self.title, self.header))
        } else {
            self.tokens
        };
        let mut added = 0;
        for row in rows {
            let cost = tok.count(&row) + 1;
            if used + cost > budget {
                break;
            }
            used += cost;
            self.rows.push(row);
            added += 1;
        }
        if !self.rows.is_empty() {
            self.tokens = used;
        }
        added
    }

    pub fn text(&self) -> Option<String> {
        if self.rows.is_empty() {
            return None;
        }
        let mut s = format!("{}\n{}\n", self.title, self.header);
        for r in &self.rows {
            s.push_str(r);
            s.push('\n');
        }
        Some(s)
    }
}

/// One row: cells joined by `|` (GraphRAG does not escape cells either).
pub fn row(cells: &[&str]) -> String {
    cells.join("|")
}

/// The sections joined by a blank line, trimmed from the end until the exact token count of the
/// whole text fits `budget` (the per-row counts are a close estimate: BPE merges never cross a
/// newline, but a row's own merges can differ at its edges). Returns the text and its tokens.
pub fn assemble(tables: &mut [&mut Table], budget: usize, tok: Tokenizer) -> (String, usize) {
    loop {
        let text = tables
            .iter()
            .filter_map(|t| t.text())
            .collect::<Vec<_>>()
            .join("\n");
        let tokens = tok.count(&text);
        if tokens <= budget {
            return (text, tokens);
        }
        match tables.iter_mut().rev().find(|t| !t.rows.is_empty()) {
            Some(last) => {
                last.rows.pop();
                if last.rows.is_empty() {
                    last.tokens = 0;
                }
            }
            None => return (String::new(), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_takes_rows_while_they_fit_and_the_whole_stays_within_budget() {
        let tok = Tokenizer::Cl100k;
        let mut t = Table::sources();
        let rows: Vec<String> = (0..100)
            .map(|i| row(&[&format!("t{i}"), "some words of text for this source"]))
            .collect();
        let added = t.fill(rows.clone(), 120, tok);
        assert!(added > 0 && added < 100, "{added}");
        assert!(t.tokens <= 120);
        assert_eq!(tok.count(&t.text().unwrap()), t.tokens);
        let mut r = Table::reports();
        r.fill(vec![row(&["c1", "A", "report"])], 50, tok);
        let (text, tokens) = assemble(&mut [&mut r, &mut t], 100, tok);
        assert!(tokens <= 100);
        assert_eq!(tokens, tok.count(&text));
        assert!(text.starts_with(
            "-----Reports-----\nid|title|content\nc1|A|report\n\n-----Sources-----\n"
        ));
    }

    #[test]
    fn a_budget_smaller_than_a_header_gives_an_empty_section() {
        let mut t = Table::entities();
        assert_eq!(
            t.fill(vec![row(&["e", "E", "d", "1"])], 3, Tokenizer::Cl100k),
            0
        );
        assert!(t.text().is_none());
        assert_eq!(t.tokens, 0);
    }
}
