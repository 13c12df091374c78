//! Tests on the real files under `$GIMVI_DATA_DIR` (CI: `../shared/data`).
//!
//! Expected values were computed independently of this crate, with Python's h5py 3.16 and
//! anndata 0.12.19 on the same files (the script is in `docs/data.md`): e.g.
//! `anndata.read_h5ad("osmfish_smfish/smfish.h5ad").X.sum()` = 847,624.
//! Without `GIMVI_DATA_DIR` these tests print that they were skipped and pass.

use std::path::PathBuf;

use gimvi_data::h5ad::{read_h5ad, H5adOptions};
use gimvi_data::loom::{read_loom, LoomOptions};
use gimvi_data::mtx::read_mtx;
use gimvi_data::prepare::{
    drop_empty_cells, library_stats, match_genes, validate_counts, CountPolicy,
};
use gimvi_data::registry::{self, Reference};
use gimvi_data::{read_any, Column};

/// `$GIMVI_DATA_DIR`; a relative value is taken from the workspace root, where
/// `cargo test --workspace` is typed (cargo runs this crate's tests inside `crates/gimvi-data`).
fn data_dir() -> Option<PathBuf> {
    match registry::data_dir(None) {
        Ok(d) if d.is_relative() && !d.exists() => Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(d),
        ),
        Ok(d) => Some(d),
        Err(_) => {
            eprintln!("GIMVI_DATA_DIR not set: real-data test skipped");
            None
        }
    }
}

const OSMFISH_GENES: [&str; 33] = [
    "Gad2", "Slc32a1", "Crhbp", "Cnr1", "Vip", "Cpne5", "Pthlh", "Crh", "Tbr1", "Lamp5", "Rorb",
    "Syt6", "Kcnip2", "Aldoc", "Gfap", "Serpinf1", "Mfge8", "Sox10", "Plp1", "Pdgfra", "Bmp4",
    "Itpr2", "Tmem2", "Ctps", "Anln", "Mrc1", "Hexb", "Ttr", "Foxj1", "Vtn", "Flt1", "Apln",
    "Acta2",
];

#[test]
fn osmfish_h5ad() {
    let Some(dir) = data_dir() else { return };
    let ds = registry::osmfish(&dir).unwrap();
    assert_eq!((ds.n_cells(), ds.n_genes()), (4530, 33));
    assert_eq!(ds.genes, OSMFISH_GENES);
    let rows = ds.counts.row_sums();
    let cols = ds.counts.col_sums();
    assert_eq!(rows.iter().sum::<f64>(), 847_624.0);
    assert_eq!((rows[0], rows[4529]), (390.0, 89.0));
    assert_eq!((cols[0], cols[9]), (56_830.0, 135_885.0)); // Gad2, Lamp5
    let sp = ds.spatial.as_ref().expect("x/y coordinates");
    assert_eq!(sp[0], vec![18171.230942376023, 24590.795274569497]);
    match ds.column("str_labels").unwrap() {
        Column::Categorical { codes, categories } => {
            assert_eq!(categories.len(), 6);
            assert_eq!(categories[codes[0] as usize], "Inhibitory");
        }
        other => panic!("str_labels should be categorical, got {other:?}"),
    }
    let mut ds = ds;
    assert_eq!(
        validate_counts(&mut ds, CountPolicy::RequireIntegers).unwrap(),
        0
    );
}

#[test]
fn starmap_loom() {
    let Some(dir) = data_dir() else { return };
    let ds = registry::starmap(&dir).unwrap();
    assert_eq!((ds.n_cells(), ds.n_genes()), (3704, 158));
    assert_eq!(&ds.genes[..3], ["acss1", "adcyap1", "adgrl2"]);
    let rows = ds.counts.row_sums();
    assert_eq!(rows.iter().sum::<f64>(), 1_616_247.0);
    assert_eq!((rows[0], rows[3703]), (167.0, 74.0));
    assert_eq!(ds.counts.col_sums()[0], 4318.0);
    let sp = ds.spatial.as_ref().expect("Spatial_coordinates");
    assert_eq!(sp[0], vec![92.8437575116581, 1062.6760732657083]);
    assert_eq!(ds.column("Clusters").unwrap().label(0), "Smc");
}

#[test]
fn osmfish_raw_loom_has_pixel_coordinates_and_ids() {
    let Some(dir) = data_dir() else { return };
    let ds = read_loom(
        dir.join("osmfish_raw/osmFISH_SScortex_mouse_all_cells.loom"),
        &LoomOptions::default(),
    )
    .unwrap();
    assert_eq!((ds.n_cells(), ds.n_genes()), (6471, 33));
    assert_eq!(ds.counts.row_sums().iter().sum::<f64>(), 1_248_106.0);
    assert_eq!(ds.counts.row_sums()[0], 390.0);
    assert_eq!(ds.cells[0], "778");
    assert_eq!(ds.spatial.as_ref().unwrap()[0][0], 18171.230942376023);
}

#[test]
fn mop_reference_h5ad_and_its_matrix_market_copy_agree() {
    let Some(dir) = data_dir() else { return };
    let h = registry::mop_reference(&dir).unwrap();
    assert_eq!((h.n_cells(), h.n_genes()), (11_444, 500));
    assert_eq!(h.counts.nnz(), 778_322);
    let rows = h.counts.row_sums();
    assert_eq!(rows.iter().sum::<f64>(), 3_772_032.0);
    assert_eq!((rows[0], rows[11_443]), (649.0, 68.0));
    assert_eq!(
        (h.genes[0].as_str(), h.counts.col_sums()[0]),
        ("Plp1", 78_152.0)
    );
    assert_eq!(h.column("cell_type").unwrap().label(0), "Lamp5 Pdlim5");
    // The MatrixMarket copy (genes × cells, gzip, text names) must hold the same matrix.
    let base = dir.join("mop_10x_dot_sample");
    let m = read_mtx(
        &base.join("ref_counts.mtx.gz"),
        &base.join("ref_genes.txt"),
        &base.join("ref_cells.csv"),
    )
    .unwrap();
    assert_eq!(m.genes, h.genes);
    assert_eq!(m.counts, h.counts);
    assert_eq!(m.column("cell_type").unwrap().label(0), "Lamp5 Pdlim5");
}

#[test]
fn zeisel_subset_csr_h5ad() {
    let Some(dir) = data_dir() else { return };
    let ds = read_any(dir.join("zeisel2015_descend_subset/zeisel_descend_subset.h5ad")).unwrap();
    assert_eq!((ds.n_cells(), ds.n_genes()), (1464, 1095));
    assert_eq!(ds.counts.row_sums().iter().sum::<f64>(), 2_671_031.0);
    assert_eq!(ds.counts.row_sums()[0], 2615.0);
    assert_eq!(
        (ds.genes[0].as_str(), ds.counts.col_sums()[0]),
        ("Tmx3", 2551.0)
    );
    assert_eq!(ds.cells[0], "1772071015_C02");
}

#[test]
fn pairs_match_genes_case_insensitively() {
    let Some(dir) = data_dir() else { return };
    let msms = registry::msms(&dir, Reference::Substitute).unwrap();
    let m = match_genes(&msms.sc, &msms.spatial).unwrap();
    assert_eq!(m.shared.len(), 16, "osmFISH genes in the 10x reference");
    assert_eq!(m.only_in_second.len(), 17);
    let mpfc = registry::mpfc(&dir, Reference::Substitute).unwrap();
    let m = match_genes(&mpfc.sc, &mpfc.spatial).unwrap();
    assert_eq!(m.shared.len(), 48, "starMAP genes in the 10x reference");
    // Same letters, different case: 'Gad1' in the reference, 'gad1' in starMAP.
    let i = m.shared.iter().position(|g| g == "Gad1").unwrap();
    assert_eq!(mpfc.spatial.genes[m.second_index[i]], "gad1");

    // Restricted to the shared genes, some spatial cells have no counts: they are dropped.
    let sp = mpfc.spatial.select_genes(&m.second_index);
    let (kept, dropped) = drop_empty_cells(&sp).unwrap();
    assert_eq!(kept.n_cells() + dropped, 3704);
    let stats = library_stats(&kept);
    assert_eq!(stats.zero_cells, 0);
    assert!(stats.log_var > 0.0);
}

#[test]
fn paper_reference_absent_is_a_clear_error() {
    // An empty data folder: the error names the preferred file and where to get it.
    let empty = std::env::temp_dir().join(format!("gimvi-no-data-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = registry::msms(&empty, Reference::Paper)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expression_mRNA_17-Aug-2014.txt") && err.contains("GSE60361"),
        "{err}"
    );
    let _ = std::fs::remove_dir(&empty);

    let Some(dir) = data_dir() else { return };
    if dir.join(registry::ZEISEL_CORTEX.relative_path).exists() {
        return; // a user with the full release
    }
    // Without the full release, the 550-cell subsample is the paper's reference when present.
    let pair = registry::msms(&dir, Reference::PaperOrSubstitute).unwrap();
    if dir.join(registry::ZEISEL550.relative_path).exists() {
        assert!(pair.sc_label.contains("550 cells"), "{}", pair.sc_label);
        assert_eq!(pair.sc.counts.n_rows(), 550);
        assert_eq!(pair.sc.genes.len(), 19_972);
    } else {
        assert!(pair.sc_label.contains("substitute"));
    }
}

#[test]
fn layer_and_raw_sources_are_reported_missing_by_name() {
    let Some(dir) = data_dir() else { return };
    let p = dir.join("osmfish_smfish/smfish.h5ad");
    let opts = H5adOptions {
        counts: gimvi_data::h5ad::CountSource::Layer("counts".into()),
    };
    let err = read_h5ad(&p, &opts).unwrap_err().to_string();
    assert!(err.contains("layers/counts"), "{err}");
}

/// pdac_sc.h5ad keeps nine spreadsheet-mangled gene names (`2-Mar`, `4-Sep`, …) as in its
/// source: they read as written, with a warning that lists them.
#[test]
fn spreadsheet_dates_in_a_real_file_are_reported() {
    let Some(dir) = data_dir() else { return };
    let path = dir.join("pdac_card/pdac_sc.h5ad");
    if !path.exists() {
        eprintln!("pdac_card/pdac_sc.h5ad absent: skipped");
        return;
    }
    let ds = read_h5ad(&path, &H5adOptions::default()).unwrap();
    let dates: Vec<&String> = ds
        .genes
        .iter()
        .filter(|g| gimvi_data::looks_like_spreadsheet_date(g))
        .collect();
    assert_eq!(dates.len(), 9, "{dates:?}");
    assert!(ds.genes.iter().any(|g| g == "2-Mar"));
    let w = ds.warnings.join("\n");
    assert!(
        w.contains("9 gene name(s) look like dates") && w.contains("2-Mar"),
        "{w}"
    );
}
