//! A benchmark's output: human tables go to stdout as they are printed; JSON lines (common fields
//! plus one record each) are appended to `--json`, or printed after the tables without it.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::sys::load_1m;

pub struct Out {
    file: Option<std::fs::File>,
    pending: Vec<String>,
    base: Value,
    with_load: bool,
}

impl Out {
    /// Lines carry the fields of `base`, `unix_time` and, when `with_load`, the machine's `load_1m`.
    pub fn new(json_path: Option<&Path>, base: Value, with_load: bool) -> Result<Self> {
        let file = match json_path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Some(
                    std::fs::File::options()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )
            }
            None => None,
        };
        Ok(Out {
            file,
            pending: Vec::new(),
            base,
            with_load,
        })
    }

    /// One JSON line: the common fields plus `record`.
    pub fn emit(&mut self, record: Value) -> Result<()> {
        let mut line = self.base.clone();
        line["unix_time"] = json!(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
        if self.with_load {
            line["load_1m"] = json!(load_1m());
        }
        if let (Some(obj), Value::Object(rec)) = (line.as_object_mut(), record) {
            obj.extend(rec);
        }
        let text = serde_json::to_string(&line)?;
        match &mut self.file {
            Some(f) => {
                writeln!(f, "{text}")?;
                f.flush()?;
            }
            None => self.pending.push(text),
        }
        Ok(())
    }

    /// Prints the JSON lines that had no file.
    pub fn finish(self) {
        if !self.pending.is_empty() {
            println!("\n# JSON lines");
            for line in self.pending {
                println!("{line}");
            }
        }
    }
}
