//! Synthetic scRNA-seq + spatial pairs sampled from the gimVI generative model itself, with
//! known latent positions and known expression of the genes the spatial side does not measure.
//!
//! Generative process (Lopez et al. 2019, Eq. 1–6):
//! * z ~ N(0, I_d) for every cell of both datasets;
//! * ρ = softmax(W z + b) over G genes, with W ~ N(0, σ_W²), b ~ N(0, σ_b²) (the linear decoder
//!   of the default model);
//! * scRNA-seq: ln ℓ ~ N(μ_ℓ, σ_ℓ²), x_g ~ NB(ℓ ρ_g, θ_g), θ_g log-uniform on [1, 20];
//! * spatial: every gene is generated, x′_g ~ Poisson(ℓ′ ρ_g e_g), with ℓ′ log-normal and, for
//!   a dataset shift, per-gene detection efficiencies e_g log-uniform on [1/3, 3]; the data
//!   the model sees is the subset G′ of genes, the rest is the held-out truth.

use gimvi_data::CsrMatrix;
use ndarray::Array2;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Normal, Poisson};

/// Settings of [`simulate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulationConfig {
    /// scRNA-seq cells.
    pub n_sc: usize,
    /// Spatial cells.
    pub n_spatial: usize,
    /// Genes G (all measured by scRNA-seq).
    pub n_genes: usize,
    /// Genes measured by the spatial assay (the first ones after a seeded shuffle).
    pub n_spatial_genes: usize,
    /// Latent dimension of the simulation.
    pub n_latent: usize,
    /// Standard deviation of the decoder weights (larger = more structured expression).
    pub weight_scale: f64,
    /// Mean of ln ℓ for scRNA-seq cells.
    pub sc_log_library: f64,
    /// Mean of ln ℓ′ for spatial cells (over all genes).
    pub spatial_log_library: f64,
    /// Apply per-gene detection efficiencies to the spatial data (a dataset shift).
    pub shift: bool,
    /// Seed.
    pub seed: u64,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            n_sc: 800,
            n_spatial: 600,
            n_genes: 60,
            n_spatial_genes: 30,
            n_latent: 4,
            weight_scale: 1.0,
            sc_log_library: 7.0,
            spatial_log_library: 6.5,
            shift: false,
            seed: 0,
        }
    }
}

/// A simulated pair and its ground truth.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Gene names of G (`gene0`, …).
    pub genes: Vec<String>,
    /// scRNA-seq counts, cells × G.
    pub sc_counts: CsrMatrix,
    /// Spatial counts of the measured genes, cells × G′.
    pub spatial_counts: CsrMatrix,
    /// Index in G of each measured spatial gene.
    pub spatial_genes: Vec<usize>,
    /// Index in G of each gene the spatial assay does not measure.
    pub held_out_genes: Vec<usize>,
    /// Spatial counts of every gene of G (the truth for the held-out ones), cells × G.
    pub spatial_all_counts: Array2<f64>,
    /// True ρ of each spatial cell over G.
    pub spatial_rho: Array2<f64>,
    /// True z of the scRNA-seq cells.
    pub sc_z: Array2<f64>,
    /// True z of the spatial cells.
    pub spatial_z: Array2<f64>,
}

/// Samples a pair from the generative model (see the module documentation).
pub fn simulate(cfg: &SimulationConfig) -> Simulation {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let std_normal = Normal::new(0.0, 1.0).expect("valid normal");
    let (g, d) = (cfg.n_genes, cfg.n_latent);
    let w = Array2::from_shape_fn((g, d), |_| cfg.weight_scale * std_normal.sample(&mut rng));
    let b: Vec<f64> = (0..g).map(|_| 0.5 * std_normal.sample(&mut rng)).collect();
    let theta: Vec<f64> = (0..g)
        .map(|_| (rng.random::<f64>() * 20f64.ln()).exp())
        .collect();
    let efficiency: Vec<f64> = (0..g)
        .map(|_| {
            if cfg.shift {
                ((rng.random::<f64>() * 2.0 - 1.0) * 3f64.ln()).exp()
            } else {
                1.0
            }
        })
        .collect();

    let sample_z =
        |n: usize, rng: &mut ChaCha8Rng| Array2::from_shape_fn((n, d), |_| std_normal.sample(rng));
    let rho_of = |z: &Array2<f64>| {
        let mut rho = z.dot(&w.t());
        for mut row in rho.outer_iter_mut() {
            let mut max = f64::NEG_INFINITY;
            for (v, bias) in row.iter_mut().zip(&b) {
                *v += bias;
                max = max.max(*v);
            }
            let mut sum = 0.0;
            row.mapv_inplace(|v| {
                let e = (v - max).exp();
                sum += e;
                e
            });
            row.mapv_inplace(|v| v / sum);
        }
        rho
    };

    // scRNA-seq: NB(ℓ ρ, θ) = Poisson(Gamma(θ, ℓ ρ / θ)).
    let sc_z = sample_z(cfg.n_sc, &mut rng);
    let sc_rho = rho_of(&sc_z);
    let lib_noise = Normal::new(0.0, 0.3).expect("valid normal");
    let mut sc_dense = vec![0f32; cfg.n_sc * g];
    for c in 0..cfg.n_sc {
        let l = (cfg.sc_log_library + lib_noise.sample(&mut rng)).exp();
        for j in 0..g {
            let mean = l * sc_rho[[c, j]];
            let rate = Gamma::new(theta[j], mean / theta[j])
                .map(|gm| gm.sample(&mut rng))
                .unwrap_or(0.0);
            sc_dense[c * g + j] = poisson(rate, &mut rng) as f32;
        }
    }

    // Spatial: all genes generated, a subset measured.
    let spatial_z = sample_z(cfg.n_spatial, &mut rng);
    let spatial_rho = rho_of(&spatial_z);
    let mut all = Array2::zeros((cfg.n_spatial, g));
    for c in 0..cfg.n_spatial {
        let l = (cfg.spatial_log_library + lib_noise.sample(&mut rng)).exp();
        for j in 0..g {
            all[[c, j]] = poisson(l * spatial_rho[[c, j]] * efficiency[j], &mut rng);
        }
    }
    let mut order: Vec<usize> = (0..g).collect();
    for i in (1..g).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut spatial_genes = order[..cfg.n_spatial_genes.min(g)].to_vec();
    spatial_genes.sort_unstable();
    let held_out_genes: Vec<usize> = (0..g).filter(|j| !spatial_genes.contains(j)).collect();
    let measured: Vec<f32> = (0..cfg.n_spatial)
        .flat_map(|c| spatial_genes.iter().map(move |&j| (c, j)))
        .map(|(c, j)| all[[c, j]] as f32)
        .collect();

    Simulation {
        genes: (0..g).map(|j| format!("gene{j}")).collect(),
        sc_counts: CsrMatrix::from_dense(cfg.n_sc, g, &sc_dense).expect("buffer matches the shape"),
        spatial_counts: CsrMatrix::from_dense(cfg.n_spatial, spatial_genes.len(), &measured)
            .expect("buffer matches the shape"),
        spatial_genes,
        held_out_genes,
        spatial_all_counts: all,
        spatial_rho,
        sc_z,
        spatial_z,
    }
}

fn poisson(rate: f64, rng: &mut ChaCha8Rng) -> f64 {
    if rate <= 0.0 || !rate.is_finite() {
        return 0.0;
    }
    Poisson::new(rate).map(|p| p.sample(rng)).unwrap_or(0.0)
}
