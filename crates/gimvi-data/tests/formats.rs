//! Round trips through every format, and bad input: each case must give its typed error,
//! never a panic.

use std::io::Write;
use std::path::Path;

use gimvi_data::delimited::{read_delimited, write_csv, Orientation};
use gimvi_data::h5ad::{read_h5ad, write_h5ad, H5adOptions, H5adOutput};
use gimvi_data::mtx::read_10x_dir;
use gimvi_data::prepare::{drop_empty_cells, match_genes, validate_counts, CountPolicy};
use gimvi_data::registry::read_zeisel_expression;
use gimvi_data::{read_any, Column, CsrMatrix, DataError, Dataset};

fn small_output(values: Vec<f32>) -> H5adOutput {
    H5adOutput {
        obs_names: vec!["c1".into(), "c2".into(), "c3".into()],
        var_names: vec!["Gad2".into(), "Lamp5".into()],
        x: values,
        layers: vec![("variance".into(), vec![0.5; 6])],
        obsm: vec![
            ("X_gimvi".into(), (0..9).map(|v| v as f32).collect(), 3),
            ("spatial".into(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2),
        ],
        obs: vec![
            (
                "dataset".into(),
                Column::Text(vec!["a".into(), "b".into(), "a".into()]),
            ),
            ("depth".into(), Column::Numeric(vec![1.5, 2.5, 3.5])),
            (
                "cell_type".into(),
                Column::Categorical {
                    codes: vec![0, 1, 0],
                    categories: vec!["Astro".into(), "Oligo".into()],
                },
            ),
        ],
        uns: vec![("method".into(), "gimvi test".into())],
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn h5ad_write_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.h5ad");
    let out = small_output(vec![0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
    write_h5ad(&p, &out).unwrap();
    let ds = read_h5ad(&p, &H5adOptions::default()).unwrap();
    assert_eq!(ds.cells, out.obs_names);
    assert_eq!(ds.genes, out.var_names);
    assert_eq!(ds.counts.to_dense(), out.x);
    assert_eq!(ds.obs, out.obs);
    assert_eq!(ds.spatial.unwrap()[2], vec![5.0, 6.0]);
    let layer = read_h5ad(
        &p,
        &H5adOptions {
            counts: gimvi_data::h5ad::CountSource::Layer("variance".into()),
        },
    )
    .unwrap();
    assert_eq!(layer.counts.to_dense(), vec![0.5; 6]);

    // A copy for the anndata check that .ci/run performs with Python after the tests.
    let check = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gimvi-anndata-check.h5ad");
    write_h5ad(&check, &out).unwrap();
}

#[test]
fn csv_and_tsv_both_orientations() {
    let dir = tempfile::tempdir().unwrap();
    // Genes as rows, header without a corner cell (Giotto's layout), tab-separated.
    let p = dir.path().join("expr.txt");
    write_file(
        &p,
        b"cell_1\tcell_2\tcell_3\nGad2\t0\t5\t1\nLamp5\t2\t0\t0\n",
    );
    let ds = read_delimited(&p, Orientation::GenesAsRows).unwrap();
    assert_eq!(ds.genes, ["Gad2", "Lamp5"]);
    assert_eq!(ds.cells, ["cell_1", "cell_2", "cell_3"]);
    assert_eq!(ds.counts.to_dense(), vec![0.0, 2.0, 5.0, 0.0, 1.0, 0.0]);
    // Cells as rows, CSV with a corner cell and quoted names.
    let p = dir.path().join("expr.csv");
    write_file(&p, b"cell,\"Gad2\",Lamp5\nc1,1,2\n\"c,2\",3,4\n");
    let ds = read_delimited(&p, Orientation::CellsAsRows).unwrap();
    assert_eq!(ds.cells, ["c1", "c,2"]);
    assert_eq!(ds.counts.to_dense(), vec![1.0, 2.0, 3.0, 4.0]);
    // CSV output reads back.
    let out = dir.path().join("imputed.csv");
    write_csv(&out, &ds.cells, &ds.genes, &ds.counts.to_dense()).unwrap();
    let back = read_delimited(&out, Orientation::CellsAsRows).unwrap();
    assert_eq!(back.cells, ds.cells);
    assert_eq!(back.counts, ds.counts);
}

#[test]
fn tenx_folder_with_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let gz = |name: &str, text: &str| {
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
    };
    gz(
        "matrix.mtx.gz",
        "%%MatrixMarket matrix coordinate integer general\n% comment\n3 2 4\n1 1 5\n3 1 1\n2 2 7\n3 2 2\n",
    );
    gz(
        "features.tsv.gz",
        "ENSMUSG1\tGad2\tGene Expression\nENSMUSG2\tLamp5\tGene Expression\nENSMUSG3\tSst\tGene Expression\n",
    );
    gz("barcodes.tsv.gz", "AAAC-1\nAAAG-1\n");
    let ds = read_10x_dir(dir.path()).unwrap();
    assert_eq!(ds.genes, ["Gad2", "Lamp5", "Sst"]);
    assert_eq!(ds.cells, ["AAAC-1", "AAAG-1"]);
    assert_eq!(ds.counts.to_dense(), vec![5.0, 0.0, 1.0, 0.0, 7.0, 2.0]);
    // read_any on the folder does the same.
    assert_eq!(read_any(dir.path()).unwrap().counts, ds.counts);
}

#[test]
fn zeisel_text_layout() {
    // The layout of expression_mRNA_17-Aug-2014.txt on a 3-cell, 2-gene miniature.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("expression.txt");
    let mut text = String::new();
    text.push_str("\ttissue\tsscortex\tca1hippocampus\tsscortex\n");
    text.push_str("\tgroup #\t1\t3\t1\n");
    for label in ["total mRNA mol", "well", "sex", "age", "diameter"] {
        text.push_str(&format!("\t{label}\t1\t2\t3\n"));
    }
    text.push_str("\tcell_id\tA1\tA2\tA3\n");
    text.push_str("\tlevel1class\tinterneurons\tpyramidal CA1\tinterneurons\n");
    text.push_str("\tlevel2class\tInt1\tCA1Pyr1\tInt2\n");
    text.push('\n');
    text.push_str("Gad2\t1\t4\t0\t2\n");
    text.push_str("Lamp5\t2\t0\t9\t1\n");
    write_file(&p, text.as_bytes());
    let ds = read_zeisel_expression(&p).unwrap();
    assert_eq!(ds.cells, ["A1", "A2", "A3"]);
    assert_eq!(ds.genes, ["Gad2", "Lamp5"]);
    assert_eq!(ds.counts.to_dense(), vec![4.0, 0.0, 0.0, 9.0, 2.0, 1.0]);
    assert_eq!(ds.column("level1class").unwrap().label(1), "pyramidal CA1");
}

// ----------------------------------------------------------------------------- bad input

#[test]
fn not_hdf5_truncated_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.h5ad");
    write_file(&text, b"this is not an HDF5 file at all\n");
    assert!(matches!(
        read_h5ad(&text, &H5adOptions::default()),
        Err(DataError::NotHdf5 { .. })
    ));

    let good = dir.path().join("good.h5ad");
    write_h5ad(&good, &small_output(vec![1.0; 6])).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for cut in [600, bytes.len() / 2, bytes.len() - 40] {
        let truncated = dir.path().join(format!("cut{cut}.h5ad"));
        write_file(&truncated, &bytes[..cut]);
        let err = read_h5ad(&truncated, &H5adOptions::default())
            .expect_err("a truncated file must not read");
        assert!(
            matches!(err, DataError::Hdf5 { .. } | DataError::Missing { .. }),
            "cut at {cut}: {err}"
        );
    }

    let missing = dir.path().join("absent.h5ad");
    assert!(matches!(
        read_h5ad(&missing, &H5adOptions::default()),
        Err(DataError::Io { .. })
    ));
}

#[test]
fn hdf5_without_x_is_missing_x() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no_x.h5ad");
    let mut b = hdf5_pure::FileBuilder::new();
    b.create_dataset("something_else")
        .with_f64_data(&[1.0, 2.0]);
    b.write(&p).unwrap();
    let err = read_h5ad(&p, &H5adOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("'X'"), "{err}");
}

fn dataset_with(values: Vec<f32>) -> Dataset {
    Dataset::new(
        "test data",
        CsrMatrix::from_dense(2, 2, &values).unwrap(),
        vec!["Gad2".into(), "Lamp5".into()],
        vec!["c1".into(), "c2".into()],
        Vec::new(),
        None,
    )
    .unwrap()
}

#[test]
fn negative_nan_and_non_integer_counts() {
    let mut ds = dataset_with(vec![1.0, -2.0, 0.0, 3.0]);
    let err = validate_counts(&mut ds, CountPolicy::RequireIntegers).unwrap_err();
    assert!(matches!(err, DataError::Negative { .. }), "{err}");
    assert!(err.to_string().contains("'c1'") && err.to_string().contains("'Lamp5'"));

    let mut ds = dataset_with(vec![1.0, 2.0, f32::NAN, 3.0]);
    let err = validate_counts(&mut ds, CountPolicy::AllowReal).unwrap_err();
    assert!(matches!(err, DataError::NonFinite { .. }), "{err}");

    let mut ds = dataset_with(vec![1.0, 2.4, 0.0, 3.0]);
    let err = validate_counts(&mut ds, CountPolicy::RequireIntegers).unwrap_err();
    assert!(matches!(err, DataError::NonInteger { .. }), "{err}");
    assert_eq!(validate_counts(&mut ds, CountPolicy::Round).unwrap(), 1);
    assert_eq!(ds.counts.get(0, 1), 2.0);

    // The same through a file: NaN and negative values survive reading and are caught.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nan.h5ad");
    write_h5ad(&p, &small_output(vec![1.0, f32::NAN, 0.0, 2.0, -1.0, 3.0])).unwrap();
    let mut ds = read_h5ad(&p, &H5adOptions::default()).unwrap();
    assert!(matches!(
        validate_counts(&mut ds, CountPolicy::RequireIntegers),
        Err(DataError::NonFinite { .. })
    ));
}

#[test]
fn no_gene_in_common_and_no_cells_left() {
    let a = dataset_with(vec![1.0, 0.0, 0.0, 1.0]);
    let mut b = dataset_with(vec![1.0, 0.0, 0.0, 1.0]);
    b.genes = vec!["Sst".into(), "Vip".into()];
    b.source = "spatial".into();
    let err = match_genes(&a, &b).unwrap_err();
    assert!(matches!(err, DataError::NoSharedGenes { .. }), "{err}");
    // Case-insensitive: GAD2 matches Gad2.
    b.genes = vec!["GAD2".into(), "Vip".into()];
    let m = match_genes(&a, &b).unwrap();
    assert_eq!(
        (m.shared.clone(), m.only_in_second.clone()),
        (vec!["Gad2".to_string()], vec!["Vip".to_string()])
    );

    let empty = dataset_with(vec![0.0; 4]);
    assert!(matches!(
        drop_empty_cells(&empty),
        Err(DataError::NoCells { .. })
    ));
}

#[test]
fn matrix_market_shape_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_file(
        &d.join("matrix.mtx"),
        b"%%MatrixMarket matrix coordinate integer general\n3 2 2\n1 1 5\n3 2 2\n",
    );
    write_file(&d.join("genes.tsv"), b"g1\tGad2\ng2\tLamp5\n"); // 2 names, 3 rows
    write_file(&d.join("barcodes.tsv"), b"A\nB\n");
    let err = read_10x_dir(d).unwrap_err();
    assert!(matches!(err, DataError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("gene names"), "{err}");

    // An entry outside the declared size, and a wrong entry count.
    write_file(&d.join("genes.tsv"), b"g1\tGad2\ng2\tLamp5\ng3\tSst\n");
    write_file(
        &d.join("matrix.mtx"),
        b"%%MatrixMarket matrix coordinate integer general\n3 2 1\n4 1 5\n",
    );
    let err = read_10x_dir(d).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
    write_file(
        &d.join("matrix.mtx"),
        b"%%MatrixMarket matrix coordinate integer general\n3 2 3\n1 1 5\n",
    );
    assert!(matches!(read_10x_dir(d), Err(DataError::Shape { .. })));
    // Missing barcodes.
    std::fs::remove_file(d.join("barcodes.tsv")).unwrap();
    assert!(matches!(read_10x_dir(d), Err(DataError::Missing { .. })));
}

#[test]
fn csr_rejects_inconsistent_parts_and_writer_rejects_bad_shapes() {
    assert!(matches!(
        CsrMatrix::from_parts(2, 2, vec![0, 1], vec![0], vec![1.0]),
        Err(DataError::Shape { .. })
    ));
    assert!(matches!(
        CsrMatrix::from_parts(1, 2, vec![0, 1], vec![5], vec![1.0]),
        Err(DataError::Shape { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut out = small_output(vec![1.0; 5]); // 3 × 2 needs 6 values
    assert!(matches!(
        write_h5ad(dir.path().join("x.h5ad"), &out),
        Err(DataError::Shape { .. })
    ));
    out.x = vec![1.0; 6];
    out.obsm[0].1.pop();
    assert!(matches!(
        write_h5ad(dir.path().join("x.h5ad"), &out),
        Err(DataError::Shape { .. })
    ));
    // A dataset whose names do not match the matrix.
    let err = Dataset::new(
        "t",
        CsrMatrix::from_dense(1, 2, &[1.0, 2.0]).unwrap(),
        vec!["only one gene".into()],
        vec!["c".into()],
        Vec::new(),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("gene names"), "{err}");
}

#[test]
fn gene_names_duplicates_empty_and_spreadsheet_dates() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ds = Dataset::new(
        "genes.csv",
        CsrMatrix::from_dense(1, 7, &[1.0; 7]).unwrap(),
        names(&["Gad2", "GAD2", "", " Sst ", "Gad2", "Gad2-1", "2-Mar"]),
        names(&["c1"]),
        Vec::new(),
        None,
    )
    .unwrap();
    // The first occurrence keeps its name; later ones get the first suffix that collides
    // with no name of the file (Gad2-1 is a later column's own name, which it keeps).
    assert_eq!(
        ds.genes,
        [
            "Gad2",
            "GAD2-2",
            "unnamed-3",
            "Sst",
            "Gad2-3",
            "Gad2-1",
            "2-Mar"
        ]
    );
    let text = ds.warnings.join("\n");
    for part in [
        "genes.csv: 1 gene name(s) had spaces around them",
        "1 empty gene name(s), named by their column: unnamed-3",
        "2 duplicate gene name(s)",
        "GAD2 → GAD2-2, Gad2 → Gad2-3",
        "look like dates a spreadsheet made of gene symbols",
        "2-Mar",
    ] {
        assert!(text.contains(part), "{part} not in {text}");
    }
    // The duplicates no longer merge in gene matching.
    let m = match_genes(&ds, &ds).unwrap();
    assert_eq!(m.shared.len(), 7);
    // Clean names: no warning.
    assert!(dataset_with(vec![1.0; 4]).warnings.is_empty());
    for (name, date) in [
        ("2-Mar", true),
        ("01-Sep", true),
        ("Dec-1", true),
        ("1-dec", true),
        ("MARCH2", false),
        ("Sept1", false),
        ("0-Mar", false),
        ("123-Mar", false),
        ("Mar-Sep", false),
        ("H2-K1", false),
    ] {
        assert_eq!(
            gimvi_data::looks_like_spreadsheet_date(name),
            date,
            "{name}"
        );
    }
}

// ----------------------------------------------------------------------------- atomic writes

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// Writing onto a folder, or into a folder that does not exist, is an I/O error naming the
/// path; nothing is created.
#[test]
fn writes_to_a_folder_or_a_missing_folder_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = small_output(vec![1.0; 6]);
    let folder = dir.path().join("results");
    std::fs::create_dir(&folder).unwrap();
    let missing = dir.path().join("no_such_folder").join("out.h5ad");
    for target in [&folder, &missing] {
        let err = write_h5ad(target, &out).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
        let err = write_csv(target, &["c".into()], &["g".into()], &[1.0]).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
    }
    assert!(folder.is_dir() && !dir.path().join("no_such_folder").exists());
    assert!(err_mentions(&write_h5ad(&folder, &out), "is a folder"));
    assert!(err_mentions(&write_h5ad(&missing, &out), "does not exist"));
    assert!(temporaries(dir.path()).is_empty());
}

fn err_mentions(r: &Result<(), DataError>, text: &str) -> bool {
    matches!(r, Err(e) if e.to_string().contains(text))
}

/// An h5ad write that fails inside the HDF5 writer (an obs column name that is not a valid
/// HDF5 link name) leaves an existing file intact and no temporary file behind.
#[test]
fn failed_h5ad_write_keeps_the_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("result.h5ad");
    let good = small_output(vec![0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
    write_h5ad(&target, &good).unwrap();
    let before = std::fs::read(&target).unwrap();
    let mut bad = small_output(vec![9.0; 6]);
    bad.obs
        .push(("bad/name".into(), Column::Numeric(vec![1.0, 2.0, 3.0])));
    let err = write_h5ad(&target, &bad).unwrap_err();
    assert!(matches!(err, DataError::Write { .. }), "{err}");
    assert!(
        err.to_string().contains(&target.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
    // The old file still reads.
    let ds = read_h5ad(&target, &H5adOptions::default()).unwrap();
    assert_eq!(ds.counts.to_dense(), good.x);
    // A successful write replaces it and leaves nothing else.
    write_h5ad(&target, &small_output(vec![5.0; 6])).unwrap();
    let ds = read_h5ad(&target, &H5adOptions::default()).unwrap();
    assert_eq!(ds.counts.to_dense(), vec![5.0; 6]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// In a folder the process cannot write to, the write fails with an error naming the path and
/// an existing file there is unchanged (skipped when running with rights that ignore
/// permissions, e.g. as root).
#[cfg(unix)]
#[test]
fn read_only_folder_write_fails_and_keeps_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let target = ro.join("imputed.csv");
    write_csv(&target, &["c1".into()], &["Gad2".into()], &[1.0]).unwrap();
    let before = std::fs::read(&target).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"x").is_ok() {
        eprintln!("permissions are not enforced for this user: read-only case skipped");
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let err = write_csv(&target, &["c1".into()], &["Gad2".into()], &[2.0]).unwrap_err();
    let h5 = write_h5ad(ro.join("out.h5ad"), &small_output(vec![1.0; 6])).unwrap_err();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains(&target.display().to_string()),
        "{err}"
    );
    assert!(h5.to_string().contains("out.h5ad"), "{h5}");
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert!(!ro.join("out.h5ad").exists());
    assert!(temporaries(&ro).is_empty());
}
