//! rtt: request/response round trips over the QUIC transport in process, against a plain
//! tokio TCP echo on loopback.

use super::*;

pub(crate) struct Echo;

impl Service for Echo {
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn call(&self, _peer: PeerInfo, request: Vec<u8>) -> Vec<u8> {
        request
    }
}

/// A plain TCP echo server: 4-byte big-endian length, then that many bytes; answered the same way.
pub(crate) async fn tcp_echo_server(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let n = u32::from_be_bytes(len) as usize;
                buf.clear();
                buf.extend_from_slice(&len);
                buf.resize(4 + n, 0);
                if stream.read_exact(&mut buf[4..]).await.is_err() {
                    return;
                }
                if stream.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
    }
}

pub(crate) struct TcpEchoClient {
    stream: TcpStream,
    frame: Vec<u8>,
    answer: Vec<u8>,
}

impl TcpEchoClient {
    pub(crate) async fn connect(addr: SocketAddr, payload: &[u8]) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        Ok(TcpEchoClient {
            stream,
            answer: vec![0; frame.len()],
            frame,
        })
    }

    pub(crate) async fn round_trip(&mut self) -> Result<()> {
        self.stream.write_all(&self.frame).await?;
        self.stream.read_exact(&mut self.answer).await?;
        Ok(())
    }
}

/// A byte payload that serialises as one serde `bytes` value (postcard: length + raw bytes, one copy)
/// instead of a sequence of `u8` (postcard writes and reads each element through serde one by one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Blob(pub(crate) Vec<u8>);

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

pub(crate) struct BlobEcho;

impl Service for BlobEcho {
    type Request = Blob;
    type Response = Blob;

    async fn call(&self, _peer: PeerInfo, request: Blob) -> Blob {
        request
    }
}

/// What one rtt row measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// The transport with `Vec<u8>` messages (the echo service as specified).
    Quic,
    /// The transport with the payload as one serde byte string (no per-byte serde work).
    QuicBytes,
    /// The baseline.
    Tcp,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Quic => "quic Vec<u8>",
            Kind::QuicBytes => "quic bytes",
            Kind::Tcp => "tcp baseline",
        }
    }
    pub(crate) fn key(self) -> &'static str {
        match self {
            Kind::Quic => "quic",
            Kind::QuicBytes => "quic_bytes",
            Kind::Tcp => "tcp",
        }
    }
}

pub(crate) async fn rtt_async(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    let count = args.count.unwrap_or(20_000);
    let warmup = args.warmup.unwrap_or(2_000);
    let rounds = args.rounds;
    let per_round = count.div_ceil(rounds);

    let ca = ClusterCa::derive(DEV_CLUSTER_SECRET, "bench")?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let bind = |id: &str| -> Result<Endpoint> {
        Ok(Endpoint::bind(
            any,
            ca.issue_node_identity(id)?,
            TransportConfig::default(),
        )?)
    };
    let server = bind("bench-server")?;
    server.serve(Echo);
    let blob_server = bind("bench-blob-server")?;
    blob_server.serve(BlobEcho);
    let client = bind("bench-client")?;
    let (peer, blob_peer) = (server.local_addr(), blob_server.local_addr());

    let listener = TcpListener::bind(any).await?;
    let tcp_addr = listener.local_addr()?;
    let tcp_server = tokio::spawn(tcp_echo_server(listener));

    println!(
        "\n## rtt: sequential request/response on 127.0.0.1, {count} round trips per size and kind after \
         {warmup} warm-up, in {rounds} rounds that rotate the kinds, tokio {}",
        if args.threads == 0 {
            "current-thread runtime (client, server and baseline on one thread)".to_string()
        } else {
            format!("multi-thread runtime with {} workers", args.threads)
        }
    );
    println!(
        "{:>7} {:<13} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} | {:>7} {:>7}",
        "payload", "kind", "p50", "p90", "p99", "p99.9", "max", "rt/s", "x p50", "x p99"
    );
    let kinds = [Kind::Quic, Kind::QuicBytes, Kind::Tcp];
    let mut records = Vec::new();
    for &size in &args.sizes {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let blob = Blob(payload.clone());
        // Correctness once: every echo carries the exact bytes.
        let back: Vec<u8> = client.request(peer, &payload, None).await?;
        ensure!(back == payload, "echo over QUIC changed the payload");
        let back: Blob = client.request(blob_peer, &blob, None).await?;
        ensure!(back == blob, "bytes echo over QUIC changed the payload");
        let mut tcp = TcpEchoClient::connect(tcp_addr, &payload).await?;
        tcp.round_trip().await?;
        ensure!(tcp.answer == tcp.frame, "echo over TCP changed the payload");

        // UDP datagrams and I/O operations behind each QUIC round trip (client side, both kinds).
        let conns = [
            client.connect(peer).await?,
            client.connect(blob_peer).await?,
        ];
        let stats = || {
            conns
                .iter()
                .map(|c| c.quinn_connection().stats())
                .collect::<Vec<_>>()
        };
        let mut stats_before = None;
        let mut hists: Vec<Histogram<u64>> = kinds.iter().map(|_| histogram()).collect();
        let mut busy = [Duration::ZERO; 3];
        let started = Instant::now();
        for round in 0..=rounds {
            // Round 0 is the warm-up; then the starting kind rotates so none always follows another.
            let n = if round == 0 {
                warmup
            } else {
                per_round.min(count - (round - 1) * per_round)
            };
            if round == 1 {
                stats_before = Some(stats());
            }
            for pass in 0..kinds.len() {
                let k = (pass + round) % kinds.len();
                let phase = Instant::now();
                for _ in 0..n {
                    let t = Instant::now();
                    match kinds[k] {
                        Kind::Quic => {
                            let back: Vec<u8> = client.request(peer, &payload, None).await?;
                            ensure!(back.len() == size, "short echo over QUIC");
                        }
                        Kind::QuicBytes => {
                            let back: Blob = client.request(blob_peer, &blob, None).await?;
                            ensure!(back.0.len() == size, "short bytes echo over QUIC");
                        }
                        Kind::Tcp => tcp.round_trip().await?,
                    }
                    if round > 0 {
                        record(&mut hists[k], t.elapsed());
                    }
                }
                if round > 0 {
                    busy[k] += phase.elapsed();
                }
            }
        }
        let wall = started.elapsed();
        let stats_after = stats();
        let stats_before = stats_before.context("no measured round")?;
        let (mut tx, mut rx, mut tx_io, mut rx_io) = (0u64, 0u64, 0u64, 0u64);
        for (a, b) in stats_after.iter().zip(&stats_before) {
            tx += a.udp_tx.datagrams - b.udp_tx.datagrams;
            rx += a.udp_rx.datagrams - b.udp_rx.datagrams;
            tx_io += a.udp_tx.ios - b.udp_tx.ios;
            rx_io += a.udp_rx.ios - b.udp_rx.ios;
        }
        let quic_round_trips = (hists[0].len() + hists[1].len()).max(1) as f64;
        let per_rt = |v: u64| r3(v as f64 / quic_round_trips);
        let mtu = stats_after[1].path.current_mtu;
        let ht = &hists[2];
        let mut rec = json!({
            "bench": "rtt", "payload_bytes": size, "count": count, "warmup": warmup, "rounds": rounds,
            "runtime_threads": args.threads, "target_ratio": 3.0, "wall_s": r3(wall.as_secs_f64()),
            "quic_client_per_round_trip": {"datagrams_sent": per_rt(tx), "datagrams_received": per_rt(rx),
                "send_ios": per_rt(tx_io), "recv_ios": per_rt(rx_io)},
            "quic_path_mtu": mtu,
        });
        for (k, kind) in kinds.iter().enumerate() {
            let h = &hists[k];
            let rate = h.len() as f64 / busy[k].as_secs_f64();
            let (x50, x99) = (ratio(p50(h), p50(ht)), ratio(p99(h), p99(ht)));
            println!(
                "{:>7} {:<13} | {:>7.1}us {:>7.1}us {:>7.1}us {:>7.1}us {:>7.1}us | {:>9.0} | {:>6.2}x {:>6.2}x",
                fmt_bytes(size),
                kind.name(),
                us_of(p50(h)),
                us_of(h.value_at_quantile(0.9)),
                us_of(p99(h)),
                us_of(h.value_at_quantile(0.999)),
                us_of(h.max()),
                rate,
                x50,
                x99
            );
            let mut lat = hist_json_us(h);
            lat["round_trips_per_s"] = json!(r3(rate));
            rec[kind.key()] = lat;
            if *kind != Kind::Tcp {
                rec[format!("{}_ratio_p50", kind.key())] = json!(r3(x50));
                rec[format!("{}_ratio_p99", kind.key())] = json!(r3(x99));
                rec[format!("{}_target_met", kind.key())] = json!(x50 <= 3.0 && x99 <= 3.0);
            }
        }
        println!(
            "{:>7} quic per round trip (client side): {} datagrams sent, {} received, {} send and {} \
             receive I/O calls; path MTU {mtu} bytes",
            "",
            per_rt(tx),
            per_rt(rx),
            per_rt(tx_io),
            per_rt(rx_io)
        );
        out.emit(rec.clone())?;
        records.push(rec);
    }
    println!(
        "x = ratio to the TCP baseline of the same payload; target: QUIC/TCP <= 3x at p50 and p99; \
         rt/s = sequential round trips per second while that kind ran"
    );
    tcp_server.abort();
    client.shutdown().await;
    server.shutdown().await;
    blob_server.shutdown().await;
    Ok(records)
}

pub(crate) fn fmt_bytes(n: usize) -> String {
    if n >= 1024 && n / 1024 * 1024 == n {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

pub(crate) fn rtt(args: &Args, out: &mut Out) -> Result<Vec<Value>> {
    args.runtime()?.block_on(rtt_async(args, out))
}
