//! `caskade verify` and `caskade repair`: offline checks of a stopped store's files,
//! printed as a readable report (or JSON), with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use caskade_engine::Error;
use caskade_engine::verify::{self, Finding, RepairReport, VerifyReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::config::{RepairArgs, VerifyArgs};

/// Exit code: the store is clean (warnings allowed).
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: damage was found (verify) or remains (repair).
pub const EXIT_DAMAGE: u8 = 1;
/// Exit code: the check could not run (missing folder, locked by a server, I/O error).
pub const EXIT_CANNOT_RUN: u8 = 2;

/// Runs `caskade verify`.
pub fn verify(args: VerifyArgs) -> ExitCode {
    let bar = progress_bar("verifying");
    let result = verify::verify(&args.data_dir, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(e) => return cannot_run("verify", &args.data_dir, &e),
    };
    if args.json {
        println!("{}", verify_json(&report));
    } else {
        print!("{}", verify_text(&report));
        if report.is_clean() {
            println!("result: clean");
        } else {
            println!(
                "result: DAMAGED ({} problems); back the folder up, then run \
                 `caskade repair --data-dir {}`",
                report.damage.len(),
                args.data_dir.display()
            );
        }
    }
    exit(&report)
}

/// Runs `caskade repair`.
pub fn repair(args: RepairArgs) -> ExitCode {
    let bar = progress_bar("checking");
    let result = verify::repair(&args.data_dir, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(e) => return cannot_run("repair", &args.data_dir, &e),
    };
    if args.json {
        println!("{}", repair_json(&report));
    } else {
        print!("{}", repair_text(&report));
    }
    exit(&report.after)
}

fn exit(report: &VerifyReport) -> ExitCode {
    ExitCode::from(if report.is_clean() {
        EXIT_CLEAN
    } else {
        EXIT_DAMAGE
    })
}

/// Prints why the tool could not run and returns exit code 2.
fn cannot_run(tool: &str, dir: &Path, err: &Error) -> ExitCode {
    let message = match err {
        Error::Locked { .. } => format!(
            "the data folder {} is locked: a running server (or another tool) has it open; \
             stop it first",
            dir.display()
        ),
        other => other.to_string(),
    };
    eprintln!("caskade {tool}: cannot run: {message}");
    ExitCode::from(EXIT_CANNOT_RUN)
}

/// A byte-count progress bar on stderr when it is a terminal; hidden otherwise.
fn progress_bar(what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(0), target)
        .with_style(style)
        .with_message(what.to_owned())
}

fn findings_text(out: &mut String, title: &str, findings: &[Finding]) {
    if findings.is_empty() {
        return;
    }
    out.push_str(&format!("{title} ({}):\n", findings.len()));
    for f in findings {
        out.push_str(&format!("  {f}\n"));
    }
}

fn verify_text(report: &VerifyReport) -> String {
    let mut out = format!("caskade verify: {}\n", report.dir.display());
    for f in &report.files {
        out.push_str(&format!(
            "  {:<16} {:<17} {:>12} bytes {:>10} {}\n",
            f.file,
            f.role,
            f.bytes,
            f.records,
            if f.role == "hint" {
                "entries"
            } else {
                "records"
            }
        ));
    }
    out.push_str(&format!(
        "checked {} files, {} bytes\n",
        report.files.len(),
        report.bytes_scanned
    ));
    findings_text(&mut out, "damage", &report.damage);
    findings_text(&mut out, "warnings", &report.warnings);
    out
}

fn repair_text(report: &RepairReport) -> String {
    let mut out = format!("caskade repair: {}\n", report.before.dir.display());
    findings_text(&mut out, "found damage", &report.before.damage);
    findings_text(&mut out, "warnings", &report.before.warnings);
    let Some(aside) = &report.damaged_dir else {
        out.push_str("nothing to repair\nresult: clean\n");
        return out;
    };
    for s in &report.salvaged {
        match &s.output {
            Some(output) => out.push_str(&format!(
                "salvaged {} records of {} into {}\n",
                s.records_salvaged, s.file, output
            )),
            None => out.push_str(&format!("no intact record in {}\n", s.file)),
        }
        for r in &s.set_aside {
            out.push_str(&format!(
                "  set aside: offset {} seq {} key {:?}: {}\n",
                r.offset,
                r.seq,
                String::from_utf8_lossy(&r.key),
                r.reason
            ));
        }
    }
    out.push_str(&format!(
        "moved into {}: {}\n",
        aside.display(),
        report.moved.join(", ")
    ));
    if !report.created.is_empty() {
        out.push_str(&format!("created: {}\n", report.created.join(", ")));
    }
    if report.after.is_clean() {
        out.push_str("result: clean; the store opens again (nothing was deleted)\n");
    } else {
        findings_text(&mut out, "damage left", &report.after.damage);
        out.push_str("result: DAMAGED still\n");
    }
    out
}

fn finding_json(f: &Finding) -> Value {
    json!({ "file": f.file, "offset": f.offset, "reason": f.reason })
}

fn verify_json(report: &VerifyReport) -> Value {
    json!({
        "dir": report.dir.display().to_string(),
        "clean": report.is_clean(),
        "bytes_scanned": report.bytes_scanned,
        "files": report.files.iter().map(|f| json!({
            "file": f.file, "role": f.role, "bytes": f.bytes, "records": f.records,
        })).collect::<Vec<_>>(),
        "damage": report.damage.iter().map(finding_json).collect::<Vec<_>>(),
        "warnings": report.warnings.iter().map(finding_json).collect::<Vec<_>>(),
    })
}

fn repair_json(report: &RepairReport) -> Value {
    json!({
        "before": verify_json(&report.before),
        "damaged_dir": report.damaged_dir.as_ref().map(|d| d.display().to_string()),
        "salvaged": report.salvaged.iter().map(|s| json!({
            "file": s.file,
            "output": s.output,
            "records_salvaged": s.records_salvaged,
            "set_aside": s.set_aside.iter().map(|r| json!({
                "offset": r.offset,
                "seq": r.seq,
                "key": String::from_utf8_lossy(&r.key),
                "reason": r.reason,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "moved": report.moved,
        "created": report.created,
        "after": verify_json(&report.after),
    })
}
