//! Debug aid: run one read-only Cypher query on a shard database file.
//! `cargo run --release -p torua-bench --example kz_peek -- <file.kz> "<cypher>"`
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let db = kuzu::Database::new(
        &args[1],
        kuzu::SystemConfig::default()
            .read_only(true)
            .buffer_pool_size(256 << 20)
            .max_db_size(1 << 33),
    )
    .expect("open");
    let conn = kuzu::Connection::new(&db).expect("conn");
    let result = conn.query(&args[2]).expect("query");
    for row in result {
        println!(
            "{}",
            row.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}
