//! A `tern log` whose files may not grow past a limit (`ulimit -f`, a real EFBIG
//! from the kernel): publishes are refused with `StorageFull`, nothing is half
//! stored, reads and pings keep working, and after a restart with room again every
//! acknowledged message is there and serials continue densely.

use bytes::Bytes;
use tern_link::{ChannelName, ErrorCode, Outcome, PublishMessage, Serial};
use tern_log::net::{ClientError, LogClient};
use tern_tests::LogProcess;

fn message(i: usize) -> PublishMessage {
    PublishMessage {
        channel: "disk:a".into(),
        idempotency_key: Bytes::from(format!("k{i}")),
        headers: vec![],
        payload: Bytes::from(vec![b'x'; 2000]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_size_limit_refuses_publishes_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc = LogProcess::start_with(dir.path(), &[], Some(512 * 1024)).expect("tern log starts");
    let client = LogClient::connect(proc.addr, "localhost", &proc.cert)
        .await
        .expect("connect");
    let mut acked = 0usize;
    let mut refused = None;
    for b in 0..1000 {
        match client
            .publish((0..10).map(|i| message(b * 10 + i)).collect())
            .await
        {
            Ok(outcomes) => {
                for o in outcomes {
                    assert!(matches!(o, Outcome::Appended(_)), "{o:?}");
                    acked += 1;
                }
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("a 512 KiB file limit is reached");
    assert!(
        matches!(&err, ClientError::Server(w) if w.code == ErrorCode::StorageFull && w.retryable),
        "{err}"
    );
    // The node keeps serving what it can.
    client.ping().await.expect("ping while full");
    let ch = ChannelName::parse("disk:a").expect("valid");
    let mut count = 0;
    let mut next = Serial::FIRST;
    loop {
        let r = client.read(&ch, next, 1000).await.expect("read while full");
        for m in &r.messages {
            assert_eq!(m.position.serial, next);
            next = next.next();
            count += 1;
        }
        if r.messages.len() < 1000 {
            break;
        }
    }
    assert_eq!(count, acked);
    assert!(
        proc.log_text().contains("storage full"),
        "the refusal is logged"
    );
    client.close().await;
    proc.kill();

    let proc = LogProcess::start(dir.path()).expect("tern log restarts without the limit");
    let client = LogClient::connect(proc.addr, "localhost", &proc.cert)
        .await
        .expect("connect");
    let out = client
        .publish(vec![message(999_999)])
        .await
        .expect("publish");
    match &out[0] {
        Outcome::Appended(p) => assert_eq!(p.serial.get(), acked as u64 + 1),
        other => panic!("{other:?}"),
    }
    client.close().await;
}
