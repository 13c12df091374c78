//! The bad-input matrix: every input a user can get wrong, fed to the `gimvi` binary, with the
//! exit code and the first line of the message it must give. The observed rows are written to
//! `target/tmp/bad-input-matrix.md` (docs/reliability.md quotes them).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One row of the matrix.
struct Case {
    /// What is wrong, as the matrix names it.
    input: &'static str,
    /// The command line after `gimvi`.
    args: Vec<String>,
    /// Expected exit code (0: accepted).
    code: i32,
    /// Text the first line of stderr must hold (for an accepted input: of stdout).
    first_line: &'static str,
}

/// A genes × cells table (the delimited layout: a header of cell names, one row per gene).
fn table(genes: &[&str], cells: usize, value: impl Fn(usize, usize) -> String) -> String {
    let mut t = String::from("gene");
    for c in 0..cells {
        let _ = write!(t, "\tc{c}");
    }
    t.push('\n');
    for (g, name) in genes.iter().enumerate() {
        t.push_str(name);
        for c in 0..cells {
            let _ = write!(t, "\t{}", value(g, c));
        }
        t.push('\n');
    }
    t
}

const GENES: [&str; 6] = ["G0", "G1", "G2", "G3", "G4", "G5"];

/// Counts of two cell types with opposite profiles.
fn count(g: usize, c: usize) -> u32 {
    if c.is_multiple_of(2) == (g < 3) {
        8 + ((c * 7 + g) % 5) as u32
    } else {
        ((c + g) % 2) as u32
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs the binary; returns (exit code, first non-empty line of stderr, or of stdout when the
/// command succeeded, the whole stderr).
fn run(argv: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gimvi"))
        .args(argv)
        .output()
        .expect("the gimvi binary runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned() + &err
    } else {
        err.clone()
    };
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    (out.status.code().unwrap_or(-1), first, err)
}

#[test]
fn every_bad_input_gets_its_exit_code_and_message() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.to_str().unwrap().to_string();
    let sc = write(
        t,
        "sc.tsv",
        &table(&GENES, 40, |g, c| count(g, c).to_string()),
    );
    // The spatial panel measures 5 of the 6 reference genes: G5 is imputed.
    let sp = write(
        t,
        "sp.tsv",
        &table(&GENES[..5], 40, |g, c| (count(g, c) / 2).to_string()),
    );
    let with =
        |name: &str, f: &dyn Fn(usize, usize) -> String| write(t, name, &table(&GENES, 40, f));
    let nan = with("nan.tsv", &|g, c| {
        if g == 1 && c == 3 {
            "nan".into()
        } else {
            count(g, c).to_string()
        }
    });
    let inf = with("inf.tsv", &|g, c| {
        if g == 2 && c == 5 {
            "inf".into()
        } else {
            count(g, c).to_string()
        }
    });
    let neg = with("neg.tsv", &|g, c| {
        if g == 0 && c == 7 {
            "-3".into()
        } else {
            count(g, c).to_string()
        }
    });
    let frac = with("frac.tsv", &|g, c| {
        if g == 4 && c == 1 {
            "2.5".into()
        } else {
            count(g, c).to_string()
        }
    });
    let some_zero = with("some_zero.tsv", &|g, c| {
        if c < 5 {
            "0".into()
        } else {
            count(g, c).to_string()
        }
    });
    let all_zero = with("all_zero.tsv", &|_, _| "0".into());
    // One spatial cell holds every count: the other cells are dropped as empty.
    let one_cell = with("one_cell.tsv", &|g, c| {
        if c == 0 {
            (1000 * (g + 1)).to_string()
        } else {
            "0".into()
        }
    });
    // One spatial cell holds counts near the f32 maximum: its library overflows and the loss
    // is no longer finite at the first step.
    let huge = with("huge.tsv", &|g, c| {
        if c == 3 {
            "3e38".into()
        } else {
            count(g, c).to_string()
        }
    });
    let no_cells = write(t, "no_cells.tsv", &table(&GENES, 0, |_, _| String::new()));
    let no_genes = write(t, "no_genes.tsv", &table(&[], 40, |_, _| String::new()));
    let disjoint = write(
        t,
        "disjoint.tsv",
        &table(&["Foo", "Bar"], 40, |g, c| count(g, c).to_string()),
    );
    let one_gene = write(
        t,
        "one_gene.tsv",
        &table(&["G0", "Bar"], 40, |g, c| count(g, c).to_string()),
    );
    let other_genes = write(
        t,
        "other.tsv",
        &table(&["H0", "H1", "H2"], 40, |g, c| count(g, c).to_string()),
    );

    // A model to break: trained for one epoch.
    let model = format!("{dir}/model");
    let fit = |spatial: &str, extra: &[&str], out: &str| {
        let mut a = args(&[
            "fit",
            "--quiet",
            "--sc",
            &sc,
            "--spatial",
            spatial,
            "--out",
            out,
        ]);
        if !extra.contains(&"--epochs") {
            a.extend(args(&["--epochs", "1"]));
        }
        a.extend(args(extra));
        a
    };
    let (code, first, err) = run(&fit(&sp, &[], &model));
    assert_eq!(code, 0, "the reference fit failed: {first} {err}");
    let copy_model = |name: &str| {
        let d = t.join(name);
        std::fs::create_dir(&d).unwrap();
        for f in ["config.json", "weights.bpk"] {
            std::fs::copy(Path::new(&model).join(f), d.join(f)).unwrap();
        }
        d
    };
    let no_weights = copy_model("no_weights");
    std::fs::remove_file(no_weights.join("weights.bpk")).unwrap();
    let bad_config = copy_model("bad_config");
    std::fs::write(bad_config.join("config.json"), "{\"format\": ").unwrap();
    let bad_weights = copy_model("bad_weights");
    let w = std::fs::read(bad_weights.join("weights.bpk")).unwrap();
    std::fs::write(bad_weights.join("weights.bpk"), &w[..w.len() / 3]).unwrap();
    let impute = |model: &Path, spatial: &str, out: &str| {
        args(&[
            "impute",
            "--model",
            model.to_str().unwrap(),
            "--spatial",
            spatial,
            "--out",
            out,
        ])
    };
    let out_h5ad = format!("{dir}/imputed.h5ad");
    let a_file = write(t, "a_file.txt", "not a folder");
    let user_folder = t.join("user_folder");
    std::fs::create_dir(&user_folder).unwrap();
    std::fs::write(user_folder.join("notes.txt"), "the user's own file").unwrap();
    let m = |name: &str| format!("{dir}/{name}");

    let mut cases = vec![
        Case {
            input: "a NaN count",
            args: fit(&nan, &[], &m("m")),
            code: 1,
            first_line: "non-finite",
        },
        Case {
            input: "an Inf count",
            args: fit(&inf, &[], &m("m")),
            code: 1,
            first_line: "non-finite",
        },
        Case {
            input: "a negative count",
            args: fit(&neg, &[], &m("m")),
            code: 1,
            first_line: "negative",
        },
        Case {
            input: "a non-integer count",
            args: fit(&frac, &[], &m("m")),
            code: 1,
            first_line: "non-integer",
        },
        Case {
            input: "a non-integer count with --round",
            args: fit(&frac, &["--round"], &m("m_round")),
            code: 0,
            first_line: "",
        },
        Case {
            input: "0 cells",
            args: fit(&no_cells, &[], &m("m")),
            code: 1,
            first_line: "no value columns",
        },
        Case {
            input: "0 genes",
            args: fit(&no_genes, &[], &m("m")),
            code: 1,
            first_line: "no data lines",
        },
        Case {
            input: "no shared gene",
            args: fit(&disjoint, &[], &m("m")),
            code: 1,
            first_line: "no gene in common",
        },
        Case {
            input: "one shared gene",
            args: fit(&one_gene, &[], &m("m")),
            code: 1,
            first_line: "only one gene (G0) in common",
        },
        Case {
            input: "some all-zero cells",
            args: fit(&some_zero, &[], &m("m_zero")),
            code: 0,
            first_line: "",
        },
        Case {
            input: "all cells all-zero",
            args: fit(&all_zero, &[], &m("m")),
            code: 1,
            first_line: "no cell left after dropping cells with zero counts",
        },
        Case {
            input: "one spatial cell holds all counts",
            args: fit(&one_cell, &[], &m("m")),
            code: 1,
            first_line: "has 1 cell(s); training needs at least 2",
        },
        Case {
            input: "one spatial cell with counts near the f32 maximum (training diverges)",
            args: fit(&huge, &["--epochs", "5"], &m("m")),
            code: 1,
            first_line: "training diverged at epoch 0",
        },
        Case {
            input: "--epochs 0",
            args: fit(&sp, &["--epochs", "0"], &m("m")),
            code: 1,
            first_line: "epochs is 0; it must be at least 1",
        },
        Case {
            input: "--latent 0",
            args: fit(&sp, &["--latent", "0"], &m("m")),
            code: 1,
            first_line: "latent and hidden sizes must be positive",
        },
        Case {
            input: "--kappa nan",
            args: fit(&sp, &["--kappa", "nan"], &m("m")),
            code: 1,
            first_line: "--kappa must be a number",
        },
        Case {
            input: "--kappa -1",
            args: fit(&sp, &["--kappa", "-1"], &m("m")),
            code: 1,
            first_line: "--kappa must be a number",
        },
        Case {
            input: "--ensemble 0",
            args: fit(&sp, &["--ensemble", "0"], &m("m")),
            code: 1,
            first_line: "--ensemble must be at least 1",
        },
        Case {
            input: "--folds 6 with 5 shared genes",
            args: args(&[
                "evaluate",
                "--quiet",
                "--sc",
                &sc,
                "--spatial",
                &sp,
                "--epochs",
                "1",
                "--folds",
                "6",
            ]),
            code: 1,
            first_line: "cannot split 5 shared genes into 6 folds",
        },
        Case {
            input: "model folder without weights.bpk",
            args: impute(&no_weights, &sp, &out_h5ad),
            code: 1,
            first_line: "weights.bpk: missing",
        },
        Case {
            input: "model folder with a corrupt config.json",
            args: impute(&bad_config, &sp, &out_h5ad),
            code: 1,
            first_line: "config.json",
        },
        Case {
            input: "model folder with a truncated weights.bpk",
            args: impute(&bad_weights, &sp, &out_h5ad),
            code: 1,
            first_line: "weights.bpk",
        },
        Case {
            input: "model trained on other genes",
            args: impute(Path::new(&model), &other_genes, &out_h5ad),
            code: 1,
            first_line: "lacks",
        },
        Case {
            input: "fit --out in a missing folder",
            args: fit(&sp, &[], &m("missing/model")),
            code: 1,
            first_line: "does not exist",
        },
        Case {
            input: "fit --out on a file",
            args: fit(&sp, &[], &a_file),
            code: 1,
            first_line: "is a file",
        },
        Case {
            input: "fit --out on a folder of other files",
            args: fit(&sp, &[], user_folder.to_str().unwrap()),
            code: 1,
            first_line: "no gimvi model",
        },
        Case {
            input: "impute --out in a missing folder",
            args: impute(Path::new(&model), &sp, &m("missing/out.h5ad")),
            code: 1,
            first_line: "does not exist",
        },
        Case {
            input: "impute --out on a folder",
            args: impute(Path::new(&model), &sp, &dir),
            code: 1,
            first_line: "is a folder; give a file name",
        },
    ];
    // A read-only folder (root ignores permissions: the case is skipped there).
    let ro = t.join("read_only");
    std::fs::create_dir(&ro).unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&ro, perm).unwrap();
    let root = std::fs::write(ro.join("probe"), "x").is_ok();
    if !root {
        cases.push(Case {
            input: "fit --out in a read-only folder",
            args: fit(&sp, &[], ro.join("model").to_str().unwrap()),
            code: 1,
            first_line: "cannot write into",
        });
        cases.push(Case {
            input: "impute --out in a read-only folder",
            args: impute(
                Path::new(&model),
                &sp,
                ro.join("out.h5ad").to_str().unwrap(),
            ),
            code: 1,
            first_line: "cannot write into",
        });
    }

    let mut rows = String::from("| input | exit | first line of the message |\n|---|---|---|\n");
    let mut failures = Vec::new();
    for case in &cases {
        let (code, first, err) = run(&case.args);
        let shown = first.replace(&dir, "<dir>").replace('|', "\\|");
        let _ = writeln!(rows, "| {} | {code} | `{shown}` |", case.input);
        let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
        let ok = code == case.code
            && first.contains(case.first_line)
            && !err.contains("panicked")
            && !err.contains("internal error")
            && (case.code == 0 || (lines == 1 && first.starts_with("error: ")));
        if !ok {
            failures.push(format!(
                "{}: expected exit {} and '{}', got exit {code}: {err}",
                case.input, case.code, case.first_line
            ));
        }
    }
    let doc = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad-input-matrix.md");
    std::fs::write(&doc, &rows).unwrap();
    println!("{rows}");
    // The model folders of refused fits were never created; the accepted ones were.
    assert!(!t.join("m").exists(), "a refused fit left a model folder");
    assert!(t.join("m_round/config.json").is_file() && t.join("m_zero/config.json").is_file());
    assert!(
        user_folder.join("notes.txt").is_file(),
        "the user's folder was touched"
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// SIGINT (Ctrl-C) in the middle of `fit`: no model folder appears, and a previous model in
/// the same folder is left byte for byte as it was.
#[cfg(unix)]
#[test]
fn an_interrupted_fit_leaves_no_folder_or_the_previous_model() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sc = write(
        t,
        "sc.tsv",
        &table(&GENES, 40, |g, c| count(g, c).to_string()),
    );
    let sp = write(
        t,
        "sp.tsv",
        &table(&GENES, 40, |g, c| (count(g, c) / 2).to_string()),
    );
    let fit = |out: &Path, epochs: &str| {
        args(&[
            "fit",
            "--quiet",
            "--sc",
            &sc,
            "--spatial",
            &sp,
            "--epochs",
            epochs,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let interrupt = |argv: Vec<String>| {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_gimvi"));
        command.args(&argv);
        // A shell starts background jobs with SIGINT ignored, and the child would inherit it
        // (then Ctrl-C does nothing and the 100,000 epochs run to the end): give the child
        // SIGINT's default action, as a terminal's foreground job has.
        // SAFETY: `signal` is async-signal-safe, and nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        // Let it read the files and train for a while (100,000 epochs take far longer).
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the fit ended before it was interrupted"
        );
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let start = Instant::now();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "an interrupted fit must not report success"
        );
        assert!(start.elapsed() < Duration::from_secs(30));
    };
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(t)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    };

    // A new folder: nothing is left behind.
    let fresh = t.join("fresh");
    interrupt(fit(&fresh, "100000"));
    assert!(!fresh.exists(), "an interrupted fit left a model folder");
    assert!(leftovers().is_empty(), "{:?}", leftovers());

    // An existing model: it stays as it was.
    let model = t.join("model");
    let (code, first, err) = run(&fit(&model, "2"));
    assert_eq!(code, 0, "{first} {err}");
    let before = snapshot(&model);
    assert!(before.iter().any(|(n, _)| n == "weights.bpk"));
    interrupt(fit(&model, "100000"));
    assert_eq!(snapshot(&model), before, "the previous model changed");
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    // And a completed fit replaces it.
    let (code, first, err) = run(&fit(&model, "1"));
    assert_eq!(code, 0, "{first} {err}");
    assert_ne!(snapshot(&model), before);
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}
