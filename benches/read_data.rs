//! Reading each real data file (release build). Needs `GIMVI_DATA_DIR` (e.g.
//! `GIMVI_DATA_DIR=../shared/data cargo bench --bench read_data`); without it, nothing runs.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use gimvi::data::{read_h5ad, read_loom, DatasetPair, H5adOptions, LoomOptions};
// The loose MatrixMarket reader is not part of the facade; the data crate has it.
use gimvi_data::mtx::read_mtx;

fn bench(c: &mut Criterion) {
    let Ok(dir) = DatasetPair::data_dir(None) else {
        eprintln!("GIMVI_DATA_DIR is not set: read_data bench skipped");
        return;
    };
    let mut group = c.benchmark_group("read");
    group.sample_size(10);
    let h5ad: [(&str, &str); 3] = [
        ("osmfish_smfish_h5ad", "osmfish_smfish/smfish.h5ad"),
        ("mop_ref_h5ad", "mop_10x_dot_sample/mop_ref.h5ad"),
        (
            "zeisel_subset_h5ad",
            "zeisel2015_descend_subset/zeisel_descend_subset.h5ad",
        ),
    ];
    for (name, rel) in h5ad {
        let p = dir.join(rel);
        group.bench_function(name, |b| {
            b.iter(|| {
                read_h5ad(&p, &H5adOptions::default())
                    .expect("readable")
                    .n_cells()
            })
        });
    }
    let loom: [(&str, &str); 2] = [
        ("starmap_loom", "starmap_mpfc/mpfc-starmap.loom"),
        (
            "osmfish_raw_loom",
            "osmfish_raw/osmFISH_SScortex_mouse_all_cells.loom",
        ),
    ];
    for (name, rel) in loom {
        let p = dir.join(rel);
        group.bench_function(name, |b| {
            b.iter(|| {
                read_loom(&p, &LoomOptions::default())
                    .expect("readable")
                    .n_cells()
            })
        });
    }
    let base: &Path = &dir.join("mop_10x_dot_sample");
    group.bench_function("mop_ref_mtx_gz", |b| {
        b.iter(|| {
            read_mtx(
                &base.join("ref_counts.mtx.gz"),
                &base.join("ref_genes.txt"),
                &base.join("ref_cells.csv"),
            )
            .expect("readable")
            .n_cells()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
