//! Prediction intervals through the front door: a calibrated fit returns calibrated intervals,
//! they survive save / load exactly, the `.h5ad` output carries them as layers, and a model
//! trained without calibration falls back to the raw posterior interval.

use crate::data::{read_h5ad, CountSource, H5adOptions};
use crate::{CountLikelihood, FitOptions, Gimvi, ImputeOptions, TrainConfig};

fn pair(dir: &std::path::Path) -> (crate::Dataset, crate::Dataset) {
    let (sc, sp) = crate::doc_example_files(dir).expect("example files");
    (crate::read(sc).unwrap(), crate::read(sp).unwrap())
}

fn fitted(sc: &crate::Dataset, sp: &crate::Dataset, splits: usize) -> Gimvi {
    let mut model = Gimvi::builder(sc)
        .spatial(sp, CountLikelihood::Poisson)
        .build()
        .unwrap();
    let train = TrainConfig {
        epochs: 4,
        seed: 5,
        ..TrainConfig::default()
    };
    model
        .train_with(
            &train,
            &FitOptions {
                calibration_splits: splits,
                ..FitOptions::default()
            },
            |_| {},
        )
        .expect("training");
    model
}

#[test]
fn calibrated_intervals_survive_save_and_load_and_reach_the_h5ad_file() {
    let dir = tempfile::tempdir().unwrap();
    let (sc, sp) = pair(dir.path());
    let model = fitted(&sc, &sp, 1);
    let imputed = model.impute(&sp, &ImputeOptions::default()).unwrap();
    let iv = imputed
        .intervals
        .as_ref()
        .expect("default impute gives intervals");
    assert!(iv.calibrated);
    assert_eq!(iv.coverage, 0.9);
    assert_eq!(iv.lower.dim(), imputed.mean.dim());
    for (lo, hi) in iv.lower.iter().zip(&iv.upper) {
        assert!(*lo >= 0.0 && lo <= hi, "[{lo}, {hi}]");
    }
    // A wider coverage never gives a narrower interval.
    let wide = model
        .impute(
            &sp,
            &ImputeOptions {
                coverage: Some(0.99),
                ..ImputeOptions::default()
            },
        )
        .unwrap();
    let wide = wide.intervals.unwrap();
    for ((lo, hi), (wlo, whi)) in iv
        .lower
        .iter()
        .zip(&iv.upper)
        .zip(wide.lower.iter().zip(&wide.upper))
    {
        assert!(wlo <= lo && hi <= whi);
    }

    // The variant for detected (nonzero) measurements has its own calibrated table.
    let detected = model
        .impute(
            &sp,
            &ImputeOptions {
                given_detection: true,
                ..ImputeOptions::default()
            },
        )
        .unwrap()
        .intervals
        .unwrap();
    assert!(detected.calibrated && detected.given_detection);
    assert_ne!(detected.lower, iv.lower);

    let saved = dir.path().join("model");
    model.save(&saved).unwrap();
    assert!(saved.join("calibration.json").is_file());
    let loaded = Gimvi::load(&saved, crate::BackendKind::default()).unwrap();
    let again = loaded.impute(&sp, &ImputeOptions::default()).unwrap();
    let again_iv = again.intervals.as_ref().unwrap();
    assert!(again_iv.calibrated);
    assert_eq!(again_iv.lower, iv.lower);
    assert_eq!(again_iv.upper, iv.upper);
    // The tempering exponent is the calibration's, saved with it.
    assert_eq!(again.tempering, imputed.tempering);
    assert_eq!(again.mean, imputed.mean);
    // This seeded fit tempers (w = 0.4 when written), so the tempered path is the one checked.
    let w = imputed.tempering.expect("a tempered imputation");
    assert!((0.0..1.0).contains(&w), "w = {w}");
    assert!(iv.method.contains("tempered"), "{}", iv.method);
    // Normalised values are the returned (tempered or not) counts over the cell's library:
    // one ratio per cell, whatever the gene.
    let normalized = model
        .impute(
            &sp,
            &ImputeOptions {
                normalized: true,
                coverage: None,
                ..ImputeOptions::default()
            },
        )
        .unwrap();
    assert_eq!(normalized.tempering, imputed.tempering);
    for (counts, shares) in imputed.mean.rows().into_iter().zip(normalized.mean.rows()) {
        let library = counts[0] / shares[0];
        for (c, s) in counts.iter().zip(&shares) {
            approx::assert_relative_eq!(*c, s * library, max_relative = 1e-4);
        }
    }

    let out = dir.path().join("imputed.h5ad");
    imputed.write_h5ad(&out).unwrap();
    for layer in ["imputed", "imputed_lower", "imputed_upper", "variance"] {
        let read = read_h5ad(
            &out,
            &H5adOptions {
                counts: CountSource::Layer(layer.into()),
            },
        )
        .unwrap_or_else(|e| panic!("layer {layer}: {e}"));
        assert_eq!(read.counts.n_rows(), imputed.cells.len());
    }
    let upper = read_h5ad(
        &out,
        &H5adOptions {
            counts: CountSource::Layer("imputed_upper".into()),
        },
    )
    .unwrap()
    .counts
    .to_dense();
    let expected: Vec<f32> = iv.upper.iter().copied().collect();
    assert_eq!(upper, expected);
}

#[test]
fn without_calibration_the_interval_is_the_raw_posterior_and_bad_coverage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sc, sp) = pair(dir.path());
    let model = fitted(&sc, &sp, 0);
    let imputed = model.impute(&sp, &ImputeOptions::default()).unwrap();
    let iv = imputed.intervals.expect("raw intervals");
    assert!(!iv.calibrated);
    assert!(iv.method.contains("raw posterior"));
    for bad in [0.0, 1.0, 1.5, f64::NAN] {
        let err = model
            .impute(
                &sp,
                &ImputeOptions {
                    coverage: Some(bad),
                    ..ImputeOptions::default()
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("coverage"), "{err}");
    }
    // No posterior samples: no variance, no interval.
    let plain = model
        .impute(
            &sp,
            &ImputeOptions {
                samples: 0,
                ..ImputeOptions::default()
            },
        )
        .unwrap();
    assert!(plain.intervals.is_none());
}
