//! The `gimvi` binary end to end: on the real files (when `GIMVI_DATA_DIR` is set, as in CI)
//! and on malformed inputs, each of which must give a one-line error and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gimvi::data::{read_h5ad, H5adOptions};

fn gimvi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gimvi"))
        .args(args)
        .output()
        .expect("the gimvi binary runs")
}

fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("GIMVI_DATA_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            eprintln!("GIMVI_DATA_DIR not set: real-data CLI test skipped");
            None
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A failure: non-zero exit, one line on stderr starting with "error:", containing `needle`,
/// and no Rust backtrace or panic message.
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "'{needle}' not in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn fit_impute_inspect_on_real_files() {
    let Some(dir) = data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let sc = dir.join("mop_10x_dot_sample/mop_ref.h5ad");
    let sp = dir.join("osmfish_smfish/smfish.h5ad");
    let model = tmp.path().join("model");

    let out = gimvi(&["inspect", s(&sp)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cells       4530") && text.contains("genes       33"),
        "{text}"
    );
    assert!(text.contains("coordinates present"), "{text}");

    let out = gimvi(&[
        "fit",
        "--quiet",
        "--sc",
        s(&sc),
        "--spatial",
        s(&sp),
        "--epochs",
        "2",
        "--latent",
        "8",
        "--out",
        s(&model),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(model.join("config.json").is_file() && model.join("weights.bpk").is_file());
    assert!(model.join("history.json").is_file());
    // The default fit calibrates the prediction intervals (extra trainings on hidden genes).
    assert!(model.join("calibration.json").is_file());

    let imputed = tmp.path().join("imputed.h5ad");
    let out = gimvi(&[
        "impute",
        "--quiet",
        "--model",
        s(&model),
        "--spatial",
        s(&sp),
        "--samples",
        "5",
        "--out",
        s(&imputed),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ds = read_h5ad(&imputed, &H5adOptions::default()).unwrap();
    // 500 reference genes, 16 of them measured by osmFISH: 484 imputed, for every cell.
    assert_eq!((ds.n_cells(), ds.n_genes()), (4530, 484));
    assert!(ds.spatial.is_some());
    assert!(ds.counts.data().iter().all(|v| v.is_finite() && *v >= 0.0));
    let var = read_h5ad(
        &imputed,
        &H5adOptions {
            counts: gimvi::data::CountSource::Layer("variance".into()),
        },
    )
    .unwrap();
    assert_eq!(var.n_genes(), 484);
    let layer = |name: &str| {
        read_h5ad(
            &imputed,
            &H5adOptions {
                counts: gimvi::data::CountSource::Layer(name.into()),
            },
        )
        .unwrap()
        .counts
        .to_dense()
    };
    let (lower, mean, upper) = (
        layer("imputed_lower"),
        layer("imputed"),
        layer("imputed_upper"),
    );
    assert_eq!(lower.len(), 4530 * 484);
    assert!(lower.iter().zip(&upper).all(|(l, u)| *l >= 0.0 && l <= u));
    // The calibrated 90 % interval is not a point: most intervals have width.
    let wide = lower.iter().zip(&upper).filter(|(l, u)| u > l).count();
    assert!(
        wide * 2 > lower.len(),
        "{wide} of {} intervals have width",
        lower.len()
    );
    assert_eq!(mean, ds.counts.to_dense());

    let csv = tmp.path().join("two.csv");
    let out = gimvi(&[
        "impute",
        "--quiet",
        "--model",
        s(&model),
        "--spatial",
        s(&sp),
        "--genes",
        "Sst,Pvalb",
        "--samples",
        "0",
        "--out",
        s(&csv),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().next(), Some("cell,Sst,Pvalb"));
    assert_eq!(text.lines().count(), 4531);

    // A gene the reference lacks, and spatial data missing the model's genes.
    let out = gimvi(&[
        "impute",
        "--model",
        s(&model),
        "--spatial",
        s(&sp),
        "--genes",
        "NotAGene",
        "--out",
        s(&csv),
    ]);
    assert_one_line_error(&out, "NotAGene");
    let starmap = dir.join("starmap_mpfc/mpfc-starmap.loom");
    let out = gimvi(&[
        "impute",
        "--model",
        s(&model),
        "--spatial",
        s(&starmap),
        "--out",
        s(&csv),
    ]);
    assert_one_line_error(&out, "lacks");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn malformed_inputs_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let good = t.join("ref.tsv");
    write(
        &good,
        "c1\tc2\tc3\tc4\nGad2\t1\t0\t2\t5\nLamp5\t0\t3\t1\t2\nSst\t4\t1\t0\t1\n",
    );
    let cases = [
        (
            "nan.tsv",
            "c1\tc2\nGad2\t1\tnan\nLamp5\t0\t3\n",
            "non-finite",
        ),
        ("neg.tsv", "c1\tc2\nGad2\t1\t-2\nLamp5\t0\t3\n", "negative"),
        (
            "frac.tsv",
            "c1\tc2\nGad2\t1.5\t2\nLamp5\t0\t3\n",
            "non-integer",
        ),
        (
            "disjoint.tsv",
            "c1\tc2\nFoo\t1\t2\nBar\t0\t3\n",
            "no gene in common",
        ),
        (
            "ragged.tsv",
            "c1\tc2\nGad2\t1\t2\t7\nLamp5\t0\n",
            "shape mismatch",
        ),
    ];
    for (name, text, needle) in cases {
        let p = t.join(name);
        write(&p, text);
        let out = gimvi(&[
            "fit",
            "--quiet",
            "--sc",
            s(&good),
            "--spatial",
            s(&p),
            "--epochs",
            "1",
            "--out",
            s(&t.join("m")),
        ]);
        assert_one_line_error(&out, needle);
    }
    // Missing file, not HDF5, truncated HDF5.
    assert_one_line_error(
        &gimvi(&["inspect", s(&t.join("absent.h5ad"))]),
        "absent.h5ad",
    );
    let fake = t.join("fake.h5ad");
    write(&fake, "plain text, not HDF5");
    assert_one_line_error(&gimvi(&["inspect", s(&fake)]), "not an HDF5 file");
    let real = t.join("real.h5ad");
    gimvi_data::h5ad::write_h5ad(
        &real,
        &gimvi_data::h5ad::H5adOutput {
            obs_names: vec!["a".into(), "b".into()],
            var_names: vec!["Gad2".into()],
            x: vec![1.0, 2.0],
            ..Default::default()
        },
    )
    .unwrap();
    let bytes = std::fs::read(&real).unwrap();
    let cut = t.join("cut.h5ad");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&gimvi(&["inspect", s(&cut)]), "truncated");
    // A backend that is not compiled in, a model folder that does not exist.
    let out = gimvi(&[
        "fit",
        "--sc",
        s(&good),
        "--spatial",
        s(&good),
        "--backend",
        "tpu",
        "--out",
        s(&t.join("m")),
    ]);
    assert_one_line_error(&out, "unknown backend");
    // A decoder learning-rate factor the trainer refuses.
    let out = gimvi(&[
        "fit",
        "--quiet",
        "--sc",
        s(&good),
        "--spatial",
        s(&good),
        "--epochs",
        "1",
        "--decoder-lr-factor",
        "0",
        "--out",
        s(&t.join("m")),
    ]);
    assert_one_line_error(&out, "the decoder learning-rate factor is 0");
    let out = gimvi(&[
        "impute",
        "--model",
        s(&t.join("none")),
        "--spatial",
        s(&good),
        "--out",
        s(&t.join("o.h5ad")),
    ]);
    assert_one_line_error(&out, "config.json");
}

/// A small pair of delimited files in `t`: six genes, two cell types with opposite
/// profiles, 40 cells each side. Returns (scRNA-seq, spatial).
fn small_pair(t: &Path) -> (PathBuf, PathBuf) {
    // Six genes, two cell types with opposite profiles, 40 cells each side.
    let mut sc = String::from("gene");
    let mut sp = String::from("gene");
    for c in 0..40 {
        sc.push_str(&format!("\tsc{c}"));
        sp.push_str(&format!("\tsp{c}"));
    }
    sc.push('\n');
    sp.push('\n');
    for g in 0..6 {
        sc.push_str(&format!("G{g}"));
        sp.push_str(&format!("G{g}"));
        for c in 0..40 {
            let high = (c % 2 == 0) == (g < 3);
            let v = if high {
                8 + (c * 7 + g) % 5
            } else {
                (c + g) % 2
            };
            sc.push_str(&format!("\t{v}"));
            sp.push_str(&format!("\t{}", v / 2 + (c % 3)));
        }
        sc.push('\n');
        sp.push('\n');
    }
    let (scp, spp) = (t.join("sc.tsv"), t.join("sp.tsv"));
    write(&scp, &sc);
    write(&spp, &sp);
    (scp, spp)
}

#[test]
fn evaluate_runs_the_protocol_on_a_small_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (scp, spp) = small_pair(t);
    let json = t.join("report.json");
    let out = gimvi(&[
        "evaluate",
        "--quiet",
        "--sc",
        s(&scp),
        "--spatial",
        s(&spp),
        "--epochs",
        "3",
        "--folds",
        "3",
        "--latent",
        "2",
        "--json",
        s(&json),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| gimVI κ=5 |") && table.contains("| per-gene mean |"),
        "{table}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["genes"].as_array().unwrap().len(), 6);
    assert_eq!(report["methods"].as_array().unwrap().len(), 3);

    // Weight averaging over the last epochs reaches the trainer: a model averaged over its last
    // two epochs imputes differently from the last epoch's weights, and a seeded averaged fit
    // imputes the same values again (the weight files hold random parameter ids, so the
    // imputations are compared).
    let fit_impute = |average: &str, dir: &str| {
        let out = gimvi(&[
            "fit",
            "--quiet",
            "--sc",
            s(&scp),
            "--spatial",
            s(&spp),
            "--epochs",
            "3",
            "--latent",
            "2",
            "--average-epochs",
            average,
            "--out",
            s(&t.join(dir)),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let csv = t.join(format!("{dir}.csv"));
        let out = gimvi(&[
            "impute",
            "--quiet",
            "--model",
            s(&t.join(dir)),
            "--spatial",
            s(&spp),
            "--genes",
            "G0,G4",
            "--samples",
            "0",
            "--out",
            s(&csv),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&csv).unwrap()
    };
    let last = fit_impute("0", "last");
    let averaged = fit_impute("2", "avg");
    assert_eq!(averaged.lines().count(), 41);
    assert_ne!(
        last, averaged,
        "--average-epochs 2 left the imputation unchanged"
    );
    assert_eq!(
        averaged,
        fit_impute("2", "avg2"),
        "an averaged seeded fit is not reproducible"
    );

    // κ chosen automatically, per fold, on the fold's training genes only.
    let out = gimvi(&[
        "evaluate",
        "--quiet",
        "--sc",
        s(&scp),
        "--spatial",
        s(&spp),
        "--epochs",
        "2",
        "--folds",
        "2",
        "--latent",
        "2",
        "--kappa",
        "auto",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("κ chosen per fold"))
        .expect("the chosen κ are reported");
    assert_eq!(
        line.split(':').nth(1).unwrap().split(',').count(),
        2,
        "{line}"
    );

    // An ensemble of two models per fold: its own row name; zero members is a one-line error.
    let ensemble = |members: &str| {
        gimvi(&[
            "evaluate",
            "--quiet",
            "--sc",
            s(&scp),
            "--spatial",
            s(&spp),
            "--epochs",
            "2",
            "--folds",
            "2",
            "--latent",
            "2",
            "--ensemble",
            members,
        ])
    };
    let out = ensemble("2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| gimVI κ=5 ×2 |"), "{table}");
    assert_one_line_error(&ensemble("0"), "--ensemble must be at least 1");

    // An average over κ: its own row; with --kappa auto, or a negative κ, a one-line error.
    let average = |kappas: &str, kappa: &str| {
        gimvi(&[
            "evaluate",
            "--quiet",
            "--sc",
            s(&scp),
            "--spatial",
            s(&spp),
            "--epochs",
            "2",
            "--folds",
            "2",
            "--latent",
            "2",
            "--kappa",
            kappa,
            "--average-kappas",
            kappas,
        ])
    };
    let out = average("0,5", "5");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| gimVI avg κ=0,5 |"), "{table}");
    // With --kappa auto the average is one more candidate of the per-fold choice.
    let out = average("0,5", "auto");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| gimVI κ*/avg (automatic) |"), "{table}");
    let chosen = table
        .lines()
        .find_map(|l| l.strip_prefix("κ chosen per fold (inner validation on training genes): "))
        .unwrap_or_else(|| panic!("no choice line: {table}"));
    assert_eq!(
        chosen.split(", ").count(),
        2,
        "one choice per fold: {chosen}"
    );
    assert!(
        chosen.split(", ").all(|c| ["0", "5", "avg"].contains(&c)),
        "{chosen}"
    );
    assert_one_line_error(&average("0,-1", "5"), "finite number ≥ 0");
}

/// `fit --ensemble` / `--average-kappas` save several models in one folder; `impute` averages
/// them, adds their spread to the variance and says so; bad settings are refused up front.
#[test]
fn fit_saves_an_ensemble_that_impute_averages() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (scp, spp) = small_pair(t);
    let fit = |extra: &[&str], dir: &str| {
        let out_dir = t.join(dir);
        let mut args = vec![
            "fit",
            "--sc",
            s(&scp),
            "--spatial",
            s(&spp),
            "--epochs",
            "2",
            "--latent",
            "2",
            "--out",
            s(&out_dir),
        ];
        args.extend_from_slice(extra);
        gimvi(&args)
    };
    let impute = |dir: &str, samples: &str| {
        let csv = t.join(format!("{dir}-{samples}.csv"));
        let out = gimvi(&[
            "impute",
            "--model",
            s(&t.join(dir)),
            "--spatial",
            s(&spp),
            "--all",
            "--samples",
            samples,
            "--out",
            s(&csv),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            std::fs::read_to_string(&csv).unwrap(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Two κ × two seeds: four models, listed in ensemble.json, each with its history.
    let out = fit(&["--ensemble", "2", "--average-kappas", "0,5"], "four");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("model 4/4: κ = 5"), "{log}");
    assert!(
        log.contains("trained 4 models, imputed as their average"),
        "{log}"
    );
    let dir = t.join("four");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ensemble.json")).unwrap()).unwrap();
    let kappas: Vec<f64> = index["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kappa"].as_f64().unwrap())
        .collect();
    assert_eq!(kappas, vec![0.0, 0.0, 5.0, 5.0]);
    for k in 1..4 {
        assert!(dir.join(format!("member-{k}/history.json")).is_file());
    }
    let (four, said) = impute("four", "3");
    assert!(said.contains("as the average of 4 models"), "{said}");
    assert!(said.contains("their spread included"), "{said}");
    assert!(t.join("four-3.variance.csv").is_file());
    // One model at κ = 5, the same seed: the ensemble's member 2; a different imputation.
    let out = fit(&["--quiet"], "one");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (one, said) = impute("one", "0");
    assert!(!said.contains("average of"), "{said}");
    let (four_plain, _) = impute("four", "0");
    assert_eq!(four_plain.lines().count(), one.lines().count());
    assert_ne!(four_plain, one, "four models imputed as one does");
    // Seeded: the same ensemble again imputes the same values.
    let out = fit(
        &["--quiet", "--ensemble", "2", "--average-kappas", "0,5"],
        "four-again",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(impute("four-again", "3").0, four);
    // The automatic κ with the average as a candidate keeps either one κ's models or all.
    let out = fit(
        &[
            "--ensemble",
            "2",
            "--kappa",
            "auto",
            "--average-kappas",
            "0,5",
        ],
        "auto",
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("choosing κ among 0, 5 and their average"),
        "{log}"
    );
    let kept = if log.contains("the models of every κ are kept") {
        4
    } else {
        2
    };
    assert!(log.contains(&format!("trained {kept} models")), "{log}");
    // Bad settings: one line each, before any training.
    assert_one_line_error(
        &fit(&["--ensemble", "0"], "bad"),
        "--ensemble must be at least 1",
    );
    assert_one_line_error(
        &fit(&["--average-kappas", "1,nan"], "bad"),
        "finite number ≥ 0",
    );
    assert!(
        !t.join("bad").exists(),
        "nothing written for refused settings"
    );
}
