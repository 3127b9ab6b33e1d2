//! `sched_replay`: run a scripted scenario through the real schedulers and
//! print each decision.
//!
//! ```text
//! cargo run --release --example sched_replay -- examples/scenarios/tour
//! cargo run --release --example sched_replay -- --explain my.trace
//! cargo run --release --example sched_replay -- --help
//! ```
//!
//! The engine and the format live in `lb_examples::replay`; this file only
//! reads arguments and files.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use lb_examples::replay::{self, Options, EXIT_BAD_LINE, EXIT_IO, EXIT_OK};

/// Replay scheduling scenarios through the real lb-sched schedulers: each
/// `conn` line prints the backend chosen ("ID NAME") or "ID -".
#[derive(Debug, Parser)]
#[command(name = "sched_replay", version, after_help = help_text())]
struct Cli {
    /// After each decision, print why it was made (lines starting "  # ").
    #[arg(long)]
    explain: bool,

    /// Before its output, print each command as "> COMMAND", so that the
    /// decisions read in context (handy with the bundled tour).
    #[arg(long)]
    echo: bool,

    /// List the schedulers of this build, with their flags and options, and exit.
    #[arg(long)]
    list: bool,

    /// Trace files to replay; "-" reads stdin, a directory replays its
    /// *.trace files in name order. With several traces, each one's output
    /// follows a "==> FILE <==" header and its leading comment lines.
    #[arg(value_name = "FILE", required_unless_present = "list")]
    files: Vec<PathBuf>,
}

fn help_text() -> String {
    let mut text = String::from(replay::FORMAT);
    text.push_str("\nSCHEDULERS OF THIS BUILD (sched NAME [options])\n");
    for (name, accepted, summary) in lb_sched::catalogue() {
        text.push_str(&format!(
            "  {name:<12} {summary}\n  {:<12} options: {accepted}\n",
            ""
        ));
    }
    text.push_str(
        "\nEXIT STATUS\n  0 every line replayed; 2 a bad line (or bad arguments); 1 a file \
         could not be read.\n",
    );
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    if cli.list {
        for (name, accepted, summary) in lb_sched::catalogue() {
            let _ = writeln!(out, "{name:<12} {summary}  [options: {accepted}]");
        }
        return ExitCode::SUCCESS;
    }
    let files = match expand(&cli.files) {
        Ok(files) => files,
        Err(e) => {
            let _ = writeln!(err, "sched_replay: {e}");
            return ExitCode::from(EXIT_IO as u8);
        }
    };
    let headers = files.len() > 1 || cli.files.iter().any(|f| f.is_dir());
    let mut status = EXIT_OK;
    for (i, file) in files.iter().enumerate() {
        if headers && header(&mut out, file, i == 0).is_err() {
            return ExitCode::from(EXIT_IO as u8);
        }
        let options = Options {
            explain: cli.explain,
            echo: cli.echo,
        };
        let code = replay_one(file, options, &mut out, &mut err);
        if code == EXIT_IO && !headers {
            return ExitCode::from(EXIT_IO as u8);
        }
        // The worst status wins: a bad line (2) over an unreadable file (1).
        status = status.max(code);
    }
    ExitCode::from(status as u8)
}

/// Replay one file (or stdin for "-").
fn replay_one(file: &Path, options: Options, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let label = file.display().to_string();
    if file == Path::new("-") {
        return replay::run_reader(io::stdin().lock(), Some("<stdin>"), options, out, err);
    }
    match File::open(file) {
        Ok(f) => replay::run_reader(BufReader::new(f), Some(&label), options, out, err),
        Err(e) => {
            let _ = writeln!(err, "sched_replay: cannot read {label}: {e}");
            EXIT_IO
        }
    }
}

/// The files to replay: directories become their `*.trace` files, sorted.
fn expand(args: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut traces: Vec<PathBuf> = fs::read_dir(arg)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "trace"))
                .collect();
            if traces.is_empty() {
                return Err(io::Error::other(format!(
                    "no *.trace file in {}",
                    arg.display()
                )));
            }
            traces.sort();
            files.extend(traces);
        } else {
            files.push(arg.clone());
        }
    }
    Ok(files)
}

/// "==> FILE <==" and the comment lines that open the file (its description).
fn header(out: &mut impl Write, file: &Path, first: bool) -> io::Result<()> {
    if !first {
        writeln!(out)?;
    }
    writeln!(out, "==> {} <==", file.display())?;
    if file != Path::new("-") {
        let text = fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().take_while(|l| l.trim_start().starts_with('#')) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

// Exit statuses are small and fixed; keep the cast honest.
const _: () = assert!(EXIT_BAD_LINE > EXIT_IO && EXIT_BAD_LINE < 256);
