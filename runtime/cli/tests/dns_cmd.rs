//! `tern dns` as an operator runs it: a bad config exits 1 listing every problem; a good
//! one prints where it listens, takes a health report, answers a real UDP query with
//! the reported edge, and exits 0 on SIGTERM. Every wait is bounded.
//!
//! `cargo test -p tern --test dns_cmd`

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
report_listen = "127.0.0.1:0"
name = "edge.tern.test."
ttl = "9s"
fallback = ["192.0.2.100"]

[[pops]]
name = "local"
subnets = ["127.0.0.0/8"]
[[pops.edges]]
name = "edge-1"
addrs = ["192.0.2.11"]
"#;

#[tokio::test]
async fn a_bad_config_lists_every_problem_and_exits_1() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dns.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:99999\"\nname = \"edge.tern.test\"\n",
    )?;
    let out = tokio::time::timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["dns", "--config"])
            .arg(&path)
            .output(),
    )
    .await??;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["listen:", "name:", "pops:", "fallback:"] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
    assert!(out.stdout.is_empty(), "{out:?}");
    Ok(())
}

#[tokio::test]
async fn serves_reports_and_queries_and_stops_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dns.toml");
    std::fs::write(&path, CONFIG)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["dns", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .context("no start-up line in time")??
        .context("stdout closed")?;
    let (dns, report) = parse_start_line(&line).with_context(|| line.clone())?;

    // Nothing reported: the fallback.
    assert_eq!(query_a(dns).await?, (9, vec![[192, 0, 2, 100]]));
    let status = post_report(report, r#"{"edge": "edge-1", "state": "up"}"#).await?;
    assert_eq!(status, 204);
    assert_eq!(query_a(dns).await?, (9, vec![[192, 0, 2, 11]]));

    let pid = child.id().context("running")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(killed.success(), "kill failed");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .context("tern dns did not exit after SIGTERM")??;
    assert!(status.success(), "{status:?}");
    Ok(())
}

/// `tern dns listening on A (udp, tcp); reports on http://B` → (A, B).
fn parse_start_line(line: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let rest = line
        .strip_prefix("tern dns listening on ")
        .context("prefix")?;
    let (dns, report) = rest
        .split_once(" (udp, tcp); reports on http://")
        .context("middle")?;
    Ok((dns.parse()?, report.parse()?))
}

async fn post_report(addr: SocketAddr, body: &str) -> anyhow::Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "POST /v1/health HTTP/1.1\r\nHost: tern\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response.split(' ').nth(1).context("no status")?;
        anyhow::Ok(status.parse::<u16>()?)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .context("no HTTP response in time")?
}

/// Asks for the A records of `edge.tern.test.` and returns the TTL and addresses of
/// the answer (a hand-made DNS message: one question, no EDNS).
async fn query_a(server: SocketAddr) -> anyhow::Result<(u32, Vec<[u8; 4]>)> {
    let mut query = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["edge", "tern", "test"] {
        query.push(u8::try_from(label.len())?);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&query, server).await?;
    let mut reply = vec![0; 1500];
    let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut reply))
        .await
        .context("no DNS reply in time")??;
    reply.truncate(len);
    parse_a_reply(&reply)
}

fn parse_a_reply(reply: &[u8]) -> anyhow::Result<(u32, Vec<[u8; 4]>)> {
    let byte = |i: usize| reply.get(i).copied().context("reply cut short");
    let u16_at = |i: usize| anyhow::Ok(u16::from_be_bytes([byte(i)?, byte(i + 1)?]));
    ensure!(u16_at(0)? == 0x1234, "id");
    ensure!(byte(2)? & 0x84 == 0x84, "a response, authoritative");
    ensure!(byte(3)? & 0x0f == 0, "rcode {}", byte(3)? & 0x0f);
    let answers = u16_at(6)?;
    // A name: labels ending with the root, or with a compression pointer.
    let skip_name = |mut at: usize| -> anyhow::Result<usize> {
        loop {
            match byte(at)? {
                0 => return Ok(at + 1),
                b if b & 0xc0 == 0xc0 => return Ok(at + 2),
                b => at += 1 + usize::from(b),
            }
        }
    };
    // Skip the question: its name, type and class.
    let mut at = skip_name(12)? + 4;
    let mut ttl = 0;
    let mut addrs = Vec::new();
    for _ in 0..answers {
        at = skip_name(at)?;
        let (rtype, rdlen) = (u16_at(at)?, usize::from(u16_at(at + 8)?));
        ttl = u32::from_be_bytes([byte(at + 4)?, byte(at + 5)?, byte(at + 6)?, byte(at + 7)?]);
        at += 10;
        if rtype != 1 || rdlen != 4 {
            bail!("not an A record: type {rtype}, {rdlen} bytes");
        }
        addrs.push([byte(at)?, byte(at + 1)?, byte(at + 2)?, byte(at + 3)?]);
        at += rdlen;
    }
    Ok((ttl, addrs))
}
