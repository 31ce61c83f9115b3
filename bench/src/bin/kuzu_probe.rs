use kuzu::{Connection, Database, LogicalType, SystemConfig, Value};
use std::io::Write;
use std::time::Instant;

fn s(v: &str) -> Value { Value::String(v.to_string()) }

fn main() {
    let dir = std::path::Path::new("/tmp/probe");
    let _ = std::fs::remove_file(dir.join("db.kz"));
    let _ = std::fs::remove_file(dir.join("db.kz.wal"));
    let db = Database::new(dir.join("db.kz"), SystemConfig::default().buffer_pool_size(std::env::var("BP").map(|v| v.parse().unwrap()).unwrap_or(1u64<<30)).max_num_threads(2).max_db_size(1<<36).checkpoint_threshold(std::env::args().nth(2).map(|a| a.parse().unwrap()).unwrap_or(-1)).auto_checkpoint(std::env::var("NOCKPT").is_err())).unwrap();
    let conn = Connection::new(&db).unwrap();
    conn.query("CREATE NODE TABLE Entity(id STRING, title STRING, stub BOOLEAN, PRIMARY KEY(id))").unwrap();
    conn.query("CREATE REL TABLE RELATED(FROM Entity TO Entity, id STRING, weight DOUBLE)").unwrap();
    let n: usize = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(100000);
    let m: usize = std::env::var("M").map(|v| v.parse().unwrap()).unwrap_or(n * 6);
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("e.csv")).unwrap());
        for i in 0..n { writeln!(f, "e{i},title {i},false").unwrap(); }
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("r.csv")).unwrap());
        for j in 0..m { writeln!(f, "e{},e{},r{j},1.0", (j*7919)%n, (j*104729+13)%n).unwrap(); }
    }
    let t = Instant::now();
    conn.query("COPY Entity FROM '/tmp/probe/e.csv' (header=false)").unwrap();
    if m > 0 { conn.query("COPY RELATED FROM '/tmp/probe/r.csv' (header=false)").unwrap(); }
    println!("setup {n} entities {m} rels {:?}", t.elapsed());
    let k: usize = std::env::var("K").map(|v| v.parse().unwrap()).unwrap_or(5000);
    let ids = Value::List(LogicalType::String, (0..k).map(|i| s(&format!("e{}", i*13 % n))).collect());
    let time = |name: &str, q: &str, params: Vec<(&str, Value)>| {
        let t = Instant::now();
        let mut st = conn.prepare(q).unwrap();
        let r = conn.execute(&mut st, params);
        match r { Ok(r) => println!("{name}: {} rows in {:?}", r.count(), t.elapsed()), Err(e) => println!("{name}: ERR {e} in {:?}", t.elapsed()) }
    };
    let rt = LogicalType::Struct { fields: vec![("id".into(), LogicalType::String), ("source".into(), LogicalType::String), ("target".into(), LogicalType::String)] };
    let mk = |off: usize| Value::List(rt.clone(), (0..k).map(|j0| { let j = j0 + off; Value::Struct(vec![("id".into(), s(&format!("r{j}"))), ("source".into(), s(&format!("e{}", (j*7919)%n))), ("target".into(), s(&format!("e{}", (j*104729+13)%n)))]) }).collect());
    let ents = |off: usize| Value::List(LogicalType::Struct { fields: vec![("id".into(), LogicalType::String), ("title".into(), LogicalType::String)] }, (0..k).map(|i| Value::Struct(vec![("id".into(), s(&format!("e{}", (i+off)*13 % n))), ("title".into(), s("new title"))])).collect());
    if std::env::var("FAST").is_err() {
    time("ent-set-unwind", "UNWIND $rows AS r MATCH (n:Entity {id: r.id}) SET n.title = r.title", vec![("rows", ents(0))]);
    // per-row prepared relation update
    {
        let t = Instant::now();
        let mut st = conn.prepare("MATCH (a:Entity {id: $s})-[x:RELATED]->(b:Entity {id: $t}) WHERE x.id = $id SET x.weight = 4.0").unwrap();
        for j in 0..1000usize {
            conn.execute(&mut st, vec![("s", s(&format!("e{}", (j*7919)%n))), ("t", s(&format!("e{}", (j*104729+13)%n))), ("id", s(&format!("r{j}")))]).unwrap();
        }
        println!("rel-update-per-row x1000: {:?}", t.elapsed());
        let t = Instant::now();
        let mut st = conn.prepare("MATCH (a:Entity {id: $s})-[x:RELATED]->(b:Entity) WHERE x.id = $id AND b.id = $t SET x.weight = 4.0").unwrap();
        for j in 0..1000usize {
            conn.execute(&mut st, vec![("s", s(&format!("e{}", (j*7919)%n))), ("t", s(&format!("e{}", (j*104729+13)%n))), ("id", s(&format!("r{j}")))]).unwrap();
        }
        println!("rel-update-per-row-b x1000: {:?}", t.elapsed());
        }
        time("check-upd", "MATCH (a:Entity {id: 'e0'})-[x:RELATED]->(b) WHERE x.id = 'r0' RETURN x.weight", vec![]);
    }
    for round in 0..std::env::var("ROUNDS").map(|v| v.parse().unwrap()).unwrap_or(12) {
        let t0 = Instant::now();
        if std::env::var("AUTO").is_err() { conn.query("BEGIN TRANSACTION").unwrap(); }
        let ne = Value::List(LogicalType::String, (0..k).map(|i| s(&format!("n{round}-{i}"))).collect());
        conn.execute(&mut conn.prepare("COPY Entity FROM (UNWIND $ids AS i RETURN i, 'stub', true)").unwrap(), vec![("ids", ne)]).unwrap();
        let rows = Value::List(rt.clone(), (0..k).map(|i| Value::Struct(vec![("id".into(), s(&format!("q{round}-{i}"))), ("source".into(), s(&if std::env::var("NOSTUB").is_ok() { format!("e{}", (i*17+round*7) % n) } else { format!("n{round}-{i}") })), ("target".into(), s(&format!("e{}", (i*31+round) % n)))])).collect());
        conn.execute(&mut conn.prepare("COPY RELATED FROM (UNWIND $rows AS r RETURN r.source, r.target, r.id, 2.5)").unwrap(), vec![("rows", rows)]).unwrap();
        let t = Instant::now();
        if std::env::var("AUTO").is_err() { conn.query("COMMIT").unwrap(); }
        println!("round {round}: total {:?} commit {:?}", t0.elapsed(), t.elapsed());
    }
    time("rel-count", "MATCH ()-[x:RELATED]->() RETURN count(*)", vec![]);
    time("check-stub-rel", "MATCH (a:Entity {id: 'n3-7'})-[x:RELATED]->(b) RETURN x.id, b.id", vec![]);
}
