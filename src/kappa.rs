//! The automatic choice of the adversarial weight κ by an inner held-out-gene validation on
//! the genes a model is given.

use burn::tensor::Device;
use gimvi_data::CsrMatrix;
use gimvi_model::{ImputeOptions, ModelConfig};
use gimvi_trainer::TrainConfig;

use crate::error::Error;
use crate::inner::{gene_groups, inner_split, INNER_GROUPS};
use crate::prepare::fit;
use ndarray::Array2;

/// The κ candidates tried by [`choose_kappa`] by default: the values the paper compares.
pub const KAPPA_CANDIDATES: [f64; 3] = [0.0, 1.0, 5.0];

/// The outcome of the automatic κ choice: an inner held-out-gene validation on the genes a
/// model is given.
#[derive(Debug, Clone, PartialEq)]
pub struct KappaChoice {
    /// The chosen κ (the best single candidate).
    pub kappa: f64,
    /// (κ, median Spearman over the inner held-out genes) for every candidate.
    pub scores: Vec<(f64, f64)>,
    /// The same score for the average of all candidates' imputations (the models of the
    /// inner validation, no extra training); `None` with a single candidate.
    pub average_score: Option<f64>,
    /// How many (gene, split) pairs were scored in the inner validation.
    pub inner_genes: usize,
    /// Per candidate (in the order of `scores`): the Spearman of every inner held-out
    /// (gene, split) pair, in the same order for every candidate.
    pub gene_scores: Vec<Vec<f64>>,
    /// The same for the average of the candidates' imputations (empty with one candidate).
    pub average_gene_scores: Vec<f64>,
}

impl KappaChoice {
    /// Whether a fold that may also use the average over the candidates should use it
    /// rather than the best single κ — a one-standard-error rule with the average as the
    /// default: the best single κ (by median inner score) replaces the average only when its
    /// per-gene inner Spearman beats the average's by more than one standard error of the
    /// paired difference (mean of the differences > sd / √n over the inner genes). With
    /// ~13 inner genes (an mSMS fold) the medians of the candidates differ by less than their
    /// noise, and picking the highest one chose worse than averaging (docs/results.md); the
    /// average is the safer estimate unless one κ is clearly better. Always false with a
    /// single candidate; true with fewer than two inner genes.
    pub fn prefers_average(&self) -> bool {
        if self.average_gene_scores.is_empty() {
            return false;
        }
        self.margin_over_average()
            .is_none_or(|(mean, se)| mean <= se)
    }

    /// The best single κ's per-gene inner Spearman minus the average's: (mean, standard
    /// error of the mean) over the inner genes; `None` without an average or with fewer than
    /// two inner genes.
    pub fn margin_over_average(&self) -> Option<(f64, f64)> {
        let best = self
            .scores
            .iter()
            .position(|&(k, _)| k == self.kappa)
            .and_then(|i| self.gene_scores.get(i))?;
        let d: Vec<f64> = best
            .iter()
            .zip(&self.average_gene_scores)
            .map(|(b, a)| b - a)
            .collect();
        let n = d.len();
        if n < 2 {
            return None;
        }
        let mean = d.iter().sum::<f64>() / n as f64;
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some((mean, (var / n as f64).sqrt()))
    }

    /// What a fold that may also choose the average uses: "avg" or the κ.
    pub fn label_with_average(&self) -> String {
        if self.prefers_average() {
            "avg".to_string()
        } else {
            self.kappa.to_string()
        }
    }
}

/// Inner validation splits [`choose_kappa`] uses: the training genes are cut into 5 seeded
/// groups of 20 % (the outer protocol's fraction) and this many of them are hidden in turn —
/// all 5, so every training gene is scored once (with 13 training genes per mSMS fold, 3 splits
/// scored only ~7 genes and the choice flipped with float-level differences between runs).
pub const KAPPA_INNER_SPLITS: usize = 5;

/// Chooses κ automatically (the paper leaves this open) by an inner held-out-gene validation
/// that uses only the genes the model is given; [`choose_kappa_with`] with
/// [`KAPPA_INNER_SPLITS`] splits.
pub fn choose_kappa(
    config: &ModelConfig,
    data: &[&CsrMatrix],
    candidates: &[f64],
    train_config: &TrainConfig,
    device: &Device,
) -> Result<KappaChoice, Error> {
    choose_kappa_with(
        config,
        data,
        candidates,
        train_config,
        KAPPA_INNER_SPLITS,
        device,
    )
}

/// Chooses κ by inner cross-validation on the genes the model is given. The genes of every
/// spatial (observed-library) dataset with at least 3 genes are shuffled (seeded) and cut into
/// 5 groups of ~20 %; for each of the first `splits` groups (1–5; 5 hides every gene once) and
/// each candidate κ a model is trained with that group hidden, the hidden genes are imputed as
/// expected counts and scored by Spearman against their counts. A candidate's score is the
/// median over all hidden genes of all splits; the highest wins (ties: the earlier candidate).
/// With two or more candidates the average of their imputations (expected counts, equally
/// weighted) is scored the same way ([`KappaChoice::average_score`]; it trains nothing more);
/// the per-gene scores are kept for [`KappaChoice::prefers_average`].
/// Callers evaluating held-out genes must pass data that already excludes them, so the choice
/// never sees them. Costs `splits × candidates.len()` trainings.
pub fn choose_kappa_with(
    config: &ModelConfig,
    data: &[&CsrMatrix],
    candidates: &[f64],
    train_config: &TrainConfig,
    splits: usize,
    device: &Device,
) -> Result<KappaChoice, Error> {
    use gimvi_metrics::correlation::median;

    if candidates.is_empty() {
        return Err(Error::Input("no κ candidate given".into()));
    }
    if !(1..=INNER_GROUPS).contains(&splits) {
        return Err(Error::Input(format!(
            "κ inner validation needs 1 to {INNER_GROUPS} splits, got {splits}"
        )));
    }
    let groups = gene_groups(config, train_config.seed ^ 0x00ca_ffe0, 3);
    if groups.is_empty() {
        return Err(Error::Input(
            "automatic κ needs a spatial dataset with at least 3 genes".into(),
        ));
    }
    let mut rhos: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
    // The same for the average of the candidates' imputations.
    let mut average: Vec<f64> = Vec::new();
    let mut inner_genes = 0;
    for split in 0..splits {
        let Some(inner) = inner_split(config, data, &groups, split) else {
            continue;
        };
        inner_genes += inner.hidden.iter().map(|h| h.genes.len()).sum::<usize>();
        let refs = inner.data(data);
        // Per hidden dataset: the sum of the candidates' imputations, for the average.
        let mut sums: Vec<Option<Array2<f64>>> = vec![None; inner.hidden.len()];
        for (c, &kappa) in candidates.iter().enumerate() {
            let cfg = TrainConfig {
                kappa,
                // Each split trains from its own initialisation.
                seed: train_config.seed.wrapping_add(1000 * split as u64),
                ..train_config.clone()
            };
            let result = fit(inner.config.clone(), &refs, &cfg, device, |_| {})?;
            for (h, hidden) in inner.hidden.iter().enumerate() {
                let imputed = result.model.impute(
                    hidden.dataset,
                    refs[hidden.dataset],
                    &hidden.genes,
                    ImputeOptions {
                        normalized: false,
                        ..ImputeOptions::default()
                    },
                )?;
                let prediction = imputed.mean.mapv(f64::from);
                score_columns(&prediction, &hidden.truth, &mut rhos[c])?;
                sums[h] = Some(match sums[h].take() {
                    None => prediction,
                    Some(sum) => sum + prediction,
                });
            }
        }
        if candidates.len() > 1 {
            for (sum, hidden) in sums.into_iter().zip(&inner.hidden) {
                if let Some(sum) = sum {
                    score_columns(
                        &(sum / candidates.len() as f64),
                        &hidden.truth,
                        &mut average,
                    )?;
                }
            }
        }
    }
    let scores: Vec<(f64, f64)> = candidates
        .iter()
        .zip(&rhos)
        .map(|(&k, r)| (k, median(r).unwrap_or(0.0)))
        .collect();
    let best = scores
        .iter()
        .fold(scores[0], |b, &s| if s.1 > b.1 { s } else { b });
    Ok(KappaChoice {
        kappa: best.0,
        scores,
        average_score: (candidates.len() > 1).then(|| median(&average).unwrap_or(0.0)),
        inner_genes,
        gene_scores: rhos,
        average_gene_scores: average,
    })
}

/// Spearman correlation of every column of `prediction` (cells × hidden genes) with the same
/// column of `truth` (0 where a column is constant), appended to `out`.
fn score_columns(
    prediction: &Array2<f64>,
    truth: &Array2<f64>,
    out: &mut Vec<f64>,
) -> Result<(), Error> {
    use gimvi_metrics::correlation::spearman;
    for (p, t) in prediction.columns().into_iter().zip(truth.columns()) {
        let (p, t): (Vec<f64>, Vec<f64>) = (p.to_vec(), t.to_vec());
        out.push(
            spearman(&p, &t)
                .map_err(|e| Error::Input(e.to_string()))?
                .unwrap_or(0.0),
        );
    }
    Ok(())
}
