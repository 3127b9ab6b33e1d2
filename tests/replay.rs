//! The replay format, from outside: every reference fixture
//! (`tests/fixtures/reference`, copied from the contract's worked examples),
//! every scenario of ours (`tests/scenarios`) and the bundled tour
//! (`examples/scenarios/tour`, expected output in `tests/tour`) is run
//! through `replay::run` and its stdout and exit status compared exactly.
//! A `.expected` file whose last line is `EXIT n` expects exit status `n`.
//!
//! A trace whose `sched` names a contract scheduler that this build does not
//! register is *deferred*, not compared; `every_contract_scheduler_is_registered`
//! fails while any is missing, so nothing is skipped silently.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use lb_examples::replay;

mod support;

/// Every scheduler name of SCHEDULERS.md and SCHEDULERS-NGINX.md.
const CONTRACT_NAMES: &[&str] = &[
    "rr",
    "wrr",
    "lc",
    "wlc",
    "sed",
    "nq",
    "lblc",
    "lblcr",
    "sh",
    "dh",
    "mh",
    "fo",
    "ovf",
    "twos",
    "least_conn",
    "ip_hash",
    "hash",
    "random",
];

struct Case {
    name: String,
    trace: String,
    stdout: String,
    status: i32,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cases of `dir`: each `NAME.trace` with its expected output, found
/// beside it or in `expected_dir`.
fn cases(dir: &Path, expected_dir: &Path) -> Vec<Case> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_name()?.to_str()?.strip_suffix(".trace")?;
            Some(stem.to_owned())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let trace = fs::read_to_string(dir.join(format!("{name}.trace"))).unwrap();
            let exp_path = expected_dir.join(format!("{name}.expected"));
            let expected = fs::read_to_string(&exp_path)
                .unwrap_or_else(|e| panic!("{}: {e}", exp_path.display()));
            let (stdout, status) = split_exit(&expected);
            Case {
                name,
                trace,
                stdout,
                status,
            }
        })
        .collect()
}

/// Split a trailing `EXIT n` line off an expected output.
fn split_exit(expected: &str) -> (String, i32) {
    let body = expected.strip_suffix('\n').unwrap_or(expected);
    match body.rsplit_once('\n').map_or(("", body), |(a, b)| (a, b)) {
        (before, last) if last.starts_with("EXIT ") => {
            let status = last[5..].trim().parse().expect("EXIT n");
            let mut out = before.to_owned();
            if !out.is_empty() {
                out.push('\n');
            }
            (out, status)
        }
        _ => (expected.to_owned(), 0),
    }
}

/// The scheduler a trace names, if it is a contract scheduler that this
/// build does not have.
fn deferred(trace: &str) -> Option<String> {
    let name = trace.lines().find_map(|l| {
        let mut words = l.split('#').next()?.split_whitespace();
        (words.next() == Some("sched")).then(|| words.next().unwrap_or("").to_owned())
    })?;
    (CONTRACT_NAMES.contains(&name.as_str()) && !lb_sched::NAMES.contains(&name.as_str()))
        .then_some(name)
}

fn replay(trace: &str, explain: bool) -> (String, String, i32) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = replay::run(trace, explain, &mut out, &mut err);
    let text = |v: Vec<u8>| String::from_utf8(v).expect("UTF-8 output");
    (text(out), text(err), status)
}

/// Where two outputs first differ, for the report.
fn first_difference(got: &str, want: &str) -> String {
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    let i = (0..g.len().max(w.len()))
        .find(|&i| g.get(i) != w.get(i))
        .unwrap_or(0);
    format!(
        "output line {}: got {:?}, want {:?} ({} lines vs {})",
        i + 1,
        g.get(i).copied().unwrap_or("<end>"),
        w.get(i).copied().unwrap_or("<end>"),
        g.len(),
        w.len()
    )
}

/// Run every case; report all mismatches by name (and what was deferred).
fn check(label: &str, cases: Vec<Case>) {
    assert!(!cases.is_empty(), "{label}: no cases found");
    let (mut failed, mut deferred_cases) = (Vec::new(), Vec::new());
    let mut passed = 0;
    for case in &cases {
        if let Some(sched) = deferred(&case.trace) {
            deferred_cases.push(format!("{} ({sched})", case.name));
            continue;
        }
        let (out, err, status) = replay(&case.trace, false);
        if out != case.stdout || status != case.status {
            let why = if out != case.stdout {
                first_difference(&out, &case.stdout)
            } else {
                String::from("same output")
            };
            failed.push(format!(
                "{}: exit {status} (want {}); {why}; stderr: {}",
                case.name,
                case.status,
                err.trim()
            ));
            continue;
        }
        if status != 0 && !err.contains("line ") {
            failed.push(format!("{}: the error names no line: {err:?}", case.name));
            continue;
        }
        // --explain adds only "  # " lines: the decisions are the same.
        let (explained, _, status2) = replay(&case.trace, true);
        let stripped: String = explained
            .lines()
            .filter(|l| !l.starts_with("  # "))
            .map(|l| format!("{l}\n"))
            .collect();
        if stripped != out || status2 != status {
            failed.push(format!("{}: --explain changes the decisions", case.name));
            continue;
        }
        passed += 1;
    }
    eprintln!(
        "{label}: {passed} passed, {} failed, {} deferred",
        failed.len(),
        deferred_cases.len()
    );
    if !deferred_cases.is_empty() {
        eprintln!(
            "{label}: deferred (scheduler not registered in this build): {}",
            deferred_cases.join(", ")
        );
    }
    assert!(
        failed.is_empty(),
        "{label}: {} of {} cases failed:\n  {}",
        failed.len(),
        cases.len(),
        failed.join("\n  ")
    );
}

#[test]
fn reference_fixtures() {
    let dir = root().join("tests/fixtures/reference");
    check("reference fixtures", cases(&dir, &dir));
}

#[test]
fn scenarios() {
    let dir = root().join("tests/scenarios");
    check("scenarios", cases(&dir, &dir));
}

#[test]
fn tour() {
    let tour = root().join("examples/scenarios/tour");
    check("tour", cases(&tour, &root().join("tests/tour")));
}

#[test]
fn every_contract_scheduler_is_registered() {
    let missing: Vec<&str> = CONTRACT_NAMES
        .iter()
        .copied()
        .filter(|n| !lb_sched::NAMES.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "schedulers of the contract missing from lb_sched::NAMES (their fixtures were deferred): {}",
        missing.join(" ")
    );
}

#[test]
fn scenarios_cover_every_scheduler_and_persistence() {
    let dir = root().join("tests/scenarios");
    let all: Vec<String> = cases(&dir, &dir).into_iter().map(|c| c.trace).collect();
    let has = |pred: &dyn Fn(&[&str]) -> bool| {
        all.iter().any(|t| {
            t.lines().any(|l| {
                pred(
                    &l.split('#')
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect::<Vec<_>>(),
                )
            })
        })
    };
    for name in CONTRACT_NAMES {
        assert!(
            has(&|w| w.len() >= 2 && w[0] == "sched" && w[1] == *name),
            "no scenario for {name}"
        );
    }
    assert!(
        has(&|w| w == ["sched", "hash", "consistent"]),
        "no scenario for hash consistent"
    );
    assert!(
        has(&|w| w.first() == Some(&"persist")),
        "no scenario for persistence"
    );
}

#[test]
fn echo_prints_each_command_before_its_output() {
    let trace =
        "sched rr # round robin\n\n  backend a 10.0.0.1:80\nconn 1 192.0.2.1:1\nat 1 2\nstats\n";
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let options = replay::Options {
        explain: false,
        echo: true,
    };
    let status = replay::run_reader(trace.as_bytes(), Some("t"), options, &mut out, &mut err);
    assert_eq!(status, replay::EXIT_BAD_LINE);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "> sched rr\n> backend a 10.0.0.1:80\n> conn 1 192.0.2.1:1\n1 a\n> at 1 2\n"
    );
    let err = String::from_utf8(err).unwrap();
    assert!(err.starts_with("t: line 5: "), "{err}");
}

fn example_binary() -> PathBuf {
    support::example_binary("sched_replay")
}

#[test]
fn example_binary_replays_a_file_reports_errors_and_explains_the_format() {
    let bin = example_binary();
    let run = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .output()
            .expect("run sched_replay");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code(),
        )
    };
    let fixture = root().join("tests/fixtures/reference/swrr-1-511.trace");
    let (out, _, code) = run(&[fixture.to_str().unwrap()]);
    let want = fs::read_to_string(fixture.with_extension("expected")).unwrap();
    assert_eq!((out.as_str(), code), (want.as_str(), Some(0)));

    let bad = root().join("tests/scenarios/err-clock-back.trace");
    let (out, err, code) = run(&[bad.to_str().unwrap()]);
    let (want, status) = split_exit(&fs::read_to_string(bad.with_extension("expected")).unwrap());
    assert_eq!((out, code), (want, Some(status)));
    assert!(err.contains("line "), "stderr names the line: {err}");

    // A directory: every *.trace in name order, each under a header.
    let tour = root().join("examples/scenarios/tour");
    let (out, _, code) = run(&["--echo", tour.to_str().unwrap()]);
    let rr = tour.join("01-rr.trace");
    assert!(
        out.starts_with(&format!("==> {} <==\n# rr", rr.display())),
        "{out}"
    );
    assert!(out.contains("> conn 1 192.0.2.10:40001\n1 web1\n"), "{out}");
    let all_registered = CONTRACT_NAMES.iter().all(|n| lb_sched::NAMES.contains(n));
    assert_eq!(code, Some(if all_registered { 0 } else { 2 }));

    let (help, _, code) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for needle in [
        "sched NAME",
        "conn ID CLIENT_IP:PORT",
        "stats",
        "--explain",
        "EXAMPLE",
        "wrr",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}
