//! The strict HTTP/1.1 edge against a corpus of raw requests
//! (`tests/corpus/*.http`, expectations in `tests/corpus/INDEX`).

mod support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lb_proxy::http::ForwardConfig;
use lb_proxy::BalanceLayer;
use support::raw::{exchange, Answer};
use support::*;

/// One corpus entry.
struct Case {
    file: String,
    bytes: Vec<u8>,
    /// The statuses expected in order; empty for `close`.
    expect: Vec<u16>,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let index = std::fs::read_to_string(dir.join("INDEX")).expect("corpus INDEX");
    let mut cases = Vec::new();
    for line in index.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(file), Some(expect)) = (cols.next(), cols.next()) else {
            panic!("bad INDEX line: {line:?}");
        };
        let expect = if expect == "close" {
            Vec::new()
        } else {
            expect
                .split(',')
                .map(|s| s.parse().expect("status"))
                .collect()
        };
        let bytes = std::fs::read(dir.join(file)).expect("corpus file");
        cases.push(Case {
            file: file.to_owned(),
            bytes,
            expect,
        });
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_of_raw_requests() {
    let a = backend("a", "127.0.0.1").await;
    let lb = balancer(&[(&a, 1)], "rr");
    let p = start_proxy("127.0.0.1", BalanceLayer::new(lb), ForwardConfig::default()).await;
    let cases = corpus();
    assert!(cases.len() >= 40, "corpus of {} requests", cases.len());
    let mut failures = Vec::new();
    let mut served = 0;
    for case in &cases {
        let before = a.hits.load(Ordering::SeqCst);
        let answer = exchange(
            p.addr,
            &case.bytes,
            case.expect.len(),
            Duration::from_secs(3),
        )
        .await;
        let oks = case.expect.iter().filter(|s| **s == 200).count() as u64;
        served += oks;
        // Refused requests close the connection, except a 417 that lets it
        // go on: the last answer says.
        let want_closed = case.expect.last().is_none_or(|s| *s >= 400);
        let ok = match &answer {
            Answer::Statuses(got, closed) => *got == case.expect && (*closed || !want_closed),
            Answer::Stalled(_) => false,
        };
        // Let the backend count whatever it may have been sent.
        let hits = a.hits.load(Ordering::SeqCst) - before;
        if !ok || hits != oks {
            failures.push(format!(
                "{}: expected {:?}, got {answer:?}, backend saw {hits}",
                case.file, case.expect
            ));
        }
        // The proxy keeps serving: a normal request on a new connection.
        let normal = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n";
        let after = exchange(p.addr, normal, 1, STEP).await;
        served += 1;
        assert_eq!(
            after,
            Answer::Statuses(vec![200], false),
            "after {}",
            case.file
        );
    }
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed",
        failures.len(),
        cases.len()
    );
    assert_eq!(
        a.hits.load(Ordering::SeqCst),
        served,
        "the backend saw only good requests"
    );
}
