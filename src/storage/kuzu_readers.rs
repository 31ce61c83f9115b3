//! Reader threads of one shard copy, for the small reads traversals make by the thousand.
//! Each thread keeps its own Kuzu connection and the statements it has prepared: opening a
//! connection and preparing a statement cost about as much as running a traversal step on a
//! small shard (0.2 ms each, measured in `step_costs`), so they are paid once per thread.
//! A copy has two pools: one for traversal steps, one for user queries (whose time limits run
//! to a minute), so a slow query never holds up traversals.

use super::Error;
use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use kuzu::{Connection, Database, PreparedStatement, Value};

/// A reader thread's connection and statement cache.
pub struct Session<'db> {
    // Statements are dropped before the connection they were prepared on (declaration order).
    statements: HashMap<String, PreparedStatement>,
    conn: Connection<'db>,
}

/// Statements a reader keeps prepared; past this the cache starts over (user queries differ).
const MAX_STATEMENTS: usize = 256;

impl<'db> Session<'db> {
    pub fn connection(&self) -> &Connection<'db> {
        &self.conn
    }

    /// The connection and `query` prepared on it (once per thread).
    pub fn prepared(
        &mut self,
        query: &str,
    ) -> Result<(&Connection<'db>, &mut PreparedStatement), kuzu::Error> {
        if !self.statements.contains_key(query) {
            if self.statements.len() >= MAX_STATEMENTS {
                self.statements.clear();
            }
            let stmt = self.conn.prepare(query)?;
            self.statements.insert(query.to_string(), stmt);
        }
        let stmt = self.statements.get_mut(query).expect("just prepared");
        Ok((&self.conn, stmt))
    }

    /// Runs `query` (prepared once per thread) with `params`, collecting the rows.
    pub fn run(
        &mut self,
        query: &str,
        params: Vec<(&str, Value)>,
    ) -> Result<Vec<Vec<Value>>, Error> {
        let (conn, stmt) = self
            .prepared(query)
            .map_err(|e| Error::Engine(format!("{e} (in {query})")))?;
        let result = conn
            .execute(stmt, params)
            .map_err(|e| Error::Engine(format!("{e} (in {query})")))?;
        Ok(result.collect())
    }
}

type Job = Box<dyn for<'s, 'c> FnOnce(&'s mut Session<'c>) + Send>;

pub struct Readers {
    jobs: Option<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    /// Starts `n` reader threads on `db`.
    pub fn start(shard: u32, kind: &str, db: Arc<Database>, n: usize) -> Result<Readers, Error> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n {
            let (db, rx) = (db.clone(), rx.clone());
            let t = std::thread::Builder::new()
                .name(format!("kuzu-{kind}-{shard}-{i}"))
                .spawn(move || reader_loop(shard, &db, &rx))
                .map_err(|e| Error::Engine(format!("cannot start a reader thread: {e}")))?;
            threads.push(t);
        }
        Ok(Readers {
            jobs: Some(tx),
            threads,
        })
    }

    /// Runs `f` on a reader thread and waits for its answer without blocking the runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'s, 'c> FnOnce(&'s mut Session<'c>) -> Result<T, Error> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |session| {
            let _ = tx.send(f(session));
        });
        self.jobs
            .as_ref()
            .ok_or_else(|| Error::Engine("the copy is closing".into()))?
            .send(job)
            .map_err(|_| Error::Engine("the copy's readers have stopped".into()))?;
        rx.await
            .map_err(|_| Error::Engine("a reader thread failed during the read".into()))?
    }
}

fn reader_loop(shard: u32, db: &Database, jobs: &Mutex<Receiver<Job>>) {
    let conn = match Connection::new(db) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(shard, error = %e, "cannot open a reader connection");
            return;
        }
    };
    let mut session = Session {
        statements: HashMap::new(),
        conn,
    };
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return, // closed: the copy is being dropped
            }
        };
        job(&mut session);
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
