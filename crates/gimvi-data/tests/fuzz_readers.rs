//! Deterministic mutation fuzzing of every reader (docs/reliability.md, "Readers").
//!
//! For each reader the harness starts from small valid seed files — written here with the
//! crate's own writer, with `hdf5-pure`'s builder or by hand, and, when `GIMVI_DATA_DIR` is
//! set, from the real files or small pieces of them — and feeds the reader:
//!
//! * a fixed list of *structured* cases: inconsistent CSR arrays, wrong shapes and dtypes,
//!   huge declared sizes, ragged or mangled tables, duplicate / empty / spreadsheet-mangled
//!   gene names, …;
//! * a seeded budget of *random* mutations of the seeds: truncations, byte flips, overwritten
//!   integers (sizes, addresses), zeroed or repeated runs, and for text, token and line edits.
//!
//! Every case runs under `catch_unwind` with an allocation guard and must end in `Ok` or a
//! [`DataError`] whose message names the file; an `Ok` dataset must survive the downstream
//! operations (sums, labels, gene matching, count validation) and have unique, non-empty gene
//! names. The test fails listing every case that panicked, allocated more than
//! [`SOFT_ALLOC_CAP`] in one request, took longer than [`SLOW_CASE`], or gave an error that
//! does not name its file. Counts per reader and mutation kind are printed to stderr.
//!
//! Environment: `GIMVI_FUZZ_CASES` (random cases per reader; defaults 6,000 for h5ad, 10x and
//! CSV/TSV, 3,000 for loom, 2,000 for the Zeisel text layout, a tenth of that in a debug
//! build) and `GIMVI_FUZZ_SEED` (default 1) choose a longer or different campaign;
//! `GIMVI_FUZZ_REPORT` names a file the per-kind counts are appended to (tab-separated);
//! `GIMVI_FUZZ_TRACE` prints every non-random case with its outcome; `GIMVI_FUZZ_KEEP` names
//! a folder the files of failing cases are copied to; `GIMVI_FUZZ_VERBOSE` prints one message
//! per reader, kind and error variant.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gimvi_data::delimited::{read_delimited, Orientation};
use gimvi_data::h5ad::{read_h5ad, write_h5ad, CountSource, H5adOptions, H5adOutput};
use gimvi_data::loom::{read_loom, LoomOptions};
use gimvi_data::mtx::{read_10x_dir, read_matrix_market, read_mtx};
use gimvi_data::prepare::{drop_empty_cells, match_genes, validate_counts, CountPolicy};
use gimvi_data::registry::read_zeisel_expression;
use gimvi_data::{read_any, Column, DataError, Dataset};
use hdf5_pure::{
    AttrValue, CharacterSet, Datatype, DatatypeByteOrder, FileBuilder, FloatingPointLayout,
    StringPadding,
};

// ----------------------------------------------------------------------- allocation guard

/// One allocation request larger than this during a case fails the case ("unbounded
/// allocation"): the seeds are at most a few MiB, so a request this size can only come from
/// a declared size nobody checked.
const SOFT_ALLOC_CAP: usize = 256 << 20;
/// Requests above this are refused outright (the process then aborts with "memory allocation
/// of N bytes failed", after printing the case), so that a bug cannot take the machine's
/// memory.
const HARD_ALLOC_CAP: usize = 4 << 30;
/// A case slower than this fails ("does not fail fast"). Cases take milliseconds (the slowest
/// in CI about 0.2 s, a real 5.8 MB h5ad read whole); the margin is for a loaded machine — a
/// niced long campaign saw 3.9 s wall time for a case that takes 42 ms alone.
const SLOW_CASE: Duration = Duration::from_secs(20);

struct Guard;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static MAX_REQUEST: Cell<usize> = const { Cell::new(0) };
    static CASE_LABEL: Cell<[u8; 160]> = const { Cell::new([0; 160]) };
}

fn note(size: usize) -> bool {
    ARMED
        .try_with(|armed| {
            if !armed.get() {
                return true;
            }
            MAX_REQUEST.with(|m| m.set(m.get().max(size)));
            if size > HARD_ALLOC_CAP {
                let label = CASE_LABEL.with(Cell::get);
                let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
                let mut err = std::io::stderr();
                let _ =
                    err.write_all(b"\nfuzz_readers: refusing an allocation over 4 GiB in case: ");
                let _ = err.write_all(&label[..end]);
                let _ = err.write_all(b"\n");
                return false;
            }
            true
        })
        .unwrap_or(true)
}

// SAFETY: forwards to the system allocator; only records request sizes.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

// ------------------------------------------------------------------------------ random

/// SplitMix64: small, fast and deterministic across platforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Random mutation cases of one reader: `GIMVI_FUZZ_CASES` when set, else the reader's CI
/// default (a tenth of it in an unoptimised build, so that a plain `cargo test` stays quick).
fn random_budget(ci_default: usize) -> usize {
    let default = if cfg!(debug_assertions) {
        ci_default / 10
    } else {
        ci_default
    };
    env_usize("GIMVI_FUZZ_CASES", default)
}

fn base_seed() -> u64 {
    env_usize("GIMVI_FUZZ_SEED", 1) as u64
}

// ----------------------------------------------------------------------------- harness

#[derive(Default, Clone, Copy)]
struct Tally {
    tried: usize,
    ok: usize,
    err: usize,
    bad: usize,
}

struct Harness {
    reader: &'static str,
    dir: tempfile::TempDir,
    tally: BTreeMap<String, Tally>,
    failures: Vec<String>,
    max_request: (usize, String),
    slowest: (Duration, String),
    started: Instant,
    errors_seen: BTreeMap<String, String>,
    last: String,
}

fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ARMED.try_with(Cell::get).unwrap_or(false) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_MESSAGE.with(|p| *p.borrow_mut() = format!("{msg} at {at}"));
            } else {
                default(info);
            }
        }));
    });
}

thread_local! {
    static PANIC_MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("gimvi-fuzz-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("gimvi-fuzz-")
        .tempdir()
        .unwrap()
}

impl Harness {
    fn new(reader: &'static str) -> Self {
        install_quiet_panic_hook();
        Harness {
            reader,
            dir: scratch_dir(),
            tally: BTreeMap::new(),
            failures: Vec::new(),
            max_request: (0, String::new()),
            slowest: (Duration::ZERO, String::new()),
            started: Instant::now(),
            errors_seen: BTreeMap::new(),
            last: String::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs one case: `run` reads the file(s) just written under the scratch directory.
    fn case(&mut self, kind: &str, label: &str, run: impl FnOnce() -> Result<Dataset, DataError>) {
        let mut buf = [0u8; 160];
        let text = format!("{} / {kind} / {label}", self.reader);
        let n = text.len().min(buf.len() - 1);
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        CASE_LABEL.with(|c| c.set(buf));
        MAX_REQUEST.with(|m| m.set(0));
        PANIC_MESSAGE.with(|p| p.borrow_mut().clear());
        let t0 = Instant::now();
        ARMED.with(|a| a.set(true));
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let r = run();
            if let Ok(ds) = &r {
                downstream(ds);
            }
            r.map(|ds| check_names(&ds).map(|()| ds.warnings.join(" | ")))
        }));
        ARMED.with(|a| a.set(false));
        let elapsed = t0.elapsed();
        let request = MAX_REQUEST.with(Cell::get);
        if request > self.max_request.0 {
            self.max_request = (request, format!("{kind} / {label}"));
        }
        if elapsed > self.slowest.0 {
            self.slowest = (elapsed, format!("{kind} / {label}"));
        }
        let mut problems = Vec::new();
        let (mut ok, mut err) = (0, 0);
        match outcome {
            Err(_) => problems.push(format!(
                "PANIC: {}",
                PANIC_MESSAGE.with(|p| p.borrow().clone())
            )),
            Ok(Ok(Err(why))) => problems.push(format!("read Ok but inconsistent: {why}")),
            Ok(Ok(Ok(warnings))) => {
                ok = 1;
                let dir = self.dir.path().display().to_string();
                self.last = if warnings.is_empty() {
                    "Ok".into()
                } else {
                    format!("Ok, warnings: {}", warnings.replace(&dir, "<dir>"))
                };
            }
            Ok(Err(e)) => {
                err = 1;
                let msg = e.to_string();
                let dir = self.dir.path().display().to_string();
                self.last = msg.replace(&dir, "<dir>");
                if !msg.contains(&dir) {
                    problems.push(format!("error does not name the file: {msg}"));
                }
                self.errors_seen
                    .entry(format!("{kind}: {}", variant(&e)))
                    .or_insert_with(|| msg.replace(&dir, "<dir>"));
            }
        }
        if request > SOFT_ALLOC_CAP {
            problems.push(format!("allocation of {request} bytes in one request"));
        }
        if elapsed > SLOW_CASE {
            problems.push(format!("took {elapsed:?}"));
        }
        if std::env::var_os("GIMVI_FUZZ_TRACE").is_some() && !kind.starts_with("random") {
            let _ = writeln!(
                std::io::stderr(),
                "trace\t{}\t{kind}\t{label}\t{}",
                self.reader,
                self.last_outcome(&problems)
            );
        }
        self.keep(kind, label, !problems.is_empty());
        let t = self.tally.entry(kind.to_string()).or_default();
        t.tried += 1;
        t.ok += ok;
        t.err += err;
        if !problems.is_empty() {
            t.bad += 1;
            self.failures.push(format!(
                "{} / {kind} / {label}: {}",
                self.reader,
                problems.join("; ")
            ));
        }
    }

    /// With `GIMVI_FUZZ_KEEP=<dir>`, copies the scratch files of a failing case there (for
    /// reproducing it).
    fn keep(&self, kind: &str, label: &str, failed: bool) {
        let Some(keep) = std::env::var_os("GIMVI_FUZZ_KEEP") else {
            return;
        };
        if !failed {
            return;
        }
        let tag: String = format!("{}-{kind}-{label}", self.reader)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(100)
            .collect();
        let dest = Path::new(&keep).join(tag);
        let _ = std::fs::create_dir_all(&dest);
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let _ = std::fs::copy(e.path(), dest.join(e.file_name()));
            }
        }
    }

    fn last_outcome(&self, problems: &[String]) -> String {
        if problems.is_empty() {
            self.last.clone()
        } else {
            problems.join("; ")
        }
    }

    /// Prints the counts and fails listing every bad case.
    fn finish(self) {
        let mut out = String::new();
        let (mut tried, mut ok, mut err, mut bad) = (0, 0, 0, 0);
        for (kind, t) in &self.tally {
            out.push_str(&format!(
                "fuzz\t{}\t{kind}\t{}\t{}\t{}\t{}\n",
                self.reader, t.tried, t.ok, t.err, t.bad
            ));
            tried += t.tried;
            ok += t.ok;
            err += t.err;
            bad += t.bad;
        }
        out.push_str(&format!(
            "fuzz\t{}\tTOTAL\t{tried}\t{ok}\t{err}\t{bad}\t{:.1} s, largest request {} KiB ({}), slowest {:?} ({})\n",
            self.reader,
            self.started.elapsed().as_secs_f64(),
            self.max_request.0 >> 10,
            self.max_request.1,
            self.slowest.0,
            self.slowest.1
        ));
        if std::env::var_os("GIMVI_FUZZ_VERBOSE").is_some() {
            for (k, m) in &self.errors_seen {
                out.push_str(&format!("fuzz-error\t{}\t{k}\t{m}\n", self.reader));
            }
        }
        let _ = std::io::stderr().write_all(out.as_bytes());
        if let Some(report) = std::env::var_os("GIMVI_FUZZ_REPORT") {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(report)
            {
                let _ = f.write_all(out.as_bytes());
            }
        }
        assert!(
            self.failures.is_empty(),
            "{} of {tried} {} cases failed:\n{}",
            self.failures.len(),
            self.reader,
            self.failures.join("\n")
        );
    }
}

fn variant(e: &DataError) -> &'static str {
    match e {
        DataError::Io { .. } => "Io",
        DataError::NotHdf5 { .. } => "NotHdf5",
        DataError::Hdf5 { .. } => "Hdf5",
        DataError::Missing { .. } => "Missing",
        DataError::Format { .. } => "Format",
        DataError::Shape { .. } => "Shape",
        DataError::NonFinite { .. } => "NonFinite",
        DataError::Negative { .. } => "Negative",
        DataError::NonInteger { .. } => "NonInteger",
        DataError::NoSharedGenes { .. } => "NoSharedGenes",
        DataError::NoCells { .. } => "NoCells",
        DataError::MissingDataFile { .. } => "MissingDataFile",
        DataError::Write { .. } => "Write",
        _ => "other",
    }
}

/// What a caller does next with a dataset: none of it may panic.
fn downstream(ds: &Dataset) {
    let rows = ds.counts.row_sums();
    let cols = ds.counts.col_sums();
    assert_eq!((rows.len(), cols.len()), (ds.n_cells(), ds.n_genes()));
    for (_, c) in &ds.obs {
        for i in 0..c.len() {
            let _ = c.label(i);
        }
    }
    if ds.n_cells().saturating_mul(ds.n_genes()) <= 1 << 20 {
        let _ = ds.counts.to_dense();
    }
    if ds.n_genes() > 0 {
        let _ = match_genes(ds, ds);
    }
    let mut copy = ds.clone();
    let _ = validate_counts(&mut copy, CountPolicy::Round);
    if let Ok((kept, _)) = drop_empty_cells(ds) {
        let _ = kept.select_genes(&(0..kept.n_genes()).rev().collect::<Vec<_>>());
    }
    if let Some(sp) = &ds.spatial {
        assert_eq!(sp.len(), ds.n_cells());
    }
}

/// The gene-name policy: names of a dataset that read are non-empty and unique, compared
/// case-insensitively as gene matching does.
fn check_names(ds: &Dataset) -> Result<(), String> {
    if ds
        .genes
        .iter()
        .any(|g| gimvi_data::looks_like_spreadsheet_date(g))
        && !ds.warnings.iter().any(|w| w.contains("spreadsheet"))
    {
        return Err("spreadsheet-date gene names without a warning".into());
    }
    let mut seen = std::collections::HashSet::new();
    for g in &ds.genes {
        if g.trim().is_empty() {
            return Err(format!("empty gene name in {:?}", ds.genes));
        }
        if !seen.insert(g.to_lowercase()) {
            return Err(format!("duplicate gene name '{g}'"));
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn data_dir() -> Option<PathBuf> {
    let d = PathBuf::from(std::env::var_os("GIMVI_DATA_DIR").filter(|v| !v.is_empty())?);
    let d = if d.is_relative() && !d.exists() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(d)
    } else {
        d
    };
    if d.is_dir() {
        Some(d)
    } else {
        None
    }
}

fn real_file(rel: &str) -> Option<Vec<u8>> {
    let p = data_dir()?.join(rel);
    std::fs::read(p).ok()
}

// ------------------------------------------------------------------- byte-level mutations

/// Integers worth writing over a size, count or address field.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7F,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    1_000_000_000_000,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

/// Offsets right after HDF5 structure signatures and in the first block, where a flip
/// changes metadata rather than stored values.
fn hot_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut hot = Vec::new();
    for sig in [
        &b"TREE"[..],
        b"HEAP",
        b"SNOD",
        b"OHDR",
        b"GCOL",
        b"FRHP",
        b"FHDB",
        b"BTHD",
        b"BTLF",
        b"FSHD",
        b"OCHK",
        b"\x89HDF",
    ] {
        let mut from = 0;
        while let Some(p) = find(&bytes[from..], sig) {
            hot.push(from + p);
            from += p + 1;
            if hot.len() > 4096 {
                break;
            }
        }
    }
    hot.sort_unstable();
    hot
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn pick_offset(rng: &mut Rng, len: usize, hot: &[usize]) -> usize {
    if len == 0 {
        return 0;
    }
    if !hot.is_empty() && rng.chance(0.6) {
        (hot[rng.below(hot.len())] + rng.below(320)).min(len - 1)
    } else if rng.chance(0.3) {
        rng.below(len.min(4096))
    } else {
        rng.below(len)
    }
}

/// One random byte-level mutation; returns its kind.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, hot: &[usize]) -> &'static str {
    let len = bytes.len();
    match rng.below(6) {
        0 => {
            let cut = if rng.chance(0.5) {
                pick_offset(rng, len, hot)
            } else {
                rng.below(len + 1)
            };
            bytes.truncate(cut);
            "truncate"
        }
        1 | 2 => {
            for _ in 0..1 + rng.below(4) {
                let at = pick_offset(rng, len, hot);
                if at < bytes.len() {
                    bytes[at] ^= 1 + rng.below(255) as u8;
                }
            }
            "flip"
        }
        3 => {
            let at = pick_offset(rng, len, hot);
            let v = *rng.pick(&INTERESTING);
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let le = v.to_le_bytes();
            for (i, b) in le.iter().take(width).enumerate() {
                if at + i < bytes.len() {
                    bytes[at + i] = *b;
                }
            }
            "overwrite-int"
        }
        4 => {
            let at = pick_offset(rng, len, hot);
            let n = 1 + rng.below(64);
            let fill = if rng.chance(0.5) { 0 } else { 0xFF };
            for b in bytes.iter_mut().skip(at).take(n) {
                *b = fill;
            }
            "zero-or-ff-run"
        }
        _ => {
            // Copy a block over another place (duplicated structure, shifted addresses).
            if len > 16 {
                let from = pick_offset(rng, len, hot);
                let to = pick_offset(rng, len, hot);
                let n = (1 + rng.below(128)).min(len - from).min(len - to);
                let block = bytes[from..from + n].to_vec();
                bytes[to..to + n].copy_from_slice(&block);
            }
            "copy-block"
        }
    }
}

// ------------------------------------------------------------------------ text mutations

const TOKENS: [&str; 26] = [
    "0",
    "-1",
    "-0",
    "1.5",
    "1e40",
    "-1e40",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "NA",
    "",
    "abc",
    "0x10",
    "18446744073709551616",
    "99999999999999999999",
    "1000000000000000",
    "4294967296",
    "4294967295",
    "2147483648",
    "1e15",
    "\u{FF12}",
    "2-Mar",
    "\"",
    "\u{FEFF}",
    "\0",
];

/// One random text mutation (on lines and tokens, or raw bytes); returns its kind.
fn mutate_text(rng: &mut Rng, bytes: &mut Vec<u8>) -> &'static str {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let n = lines.len();
    let kind = match rng.below(11) {
        0 => {
            let cut = rng.below(bytes.len() + 1);
            bytes.truncate(cut);
            return "truncate";
        }
        1 => {
            for _ in 0..1 + rng.below(3) {
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 + rng.below(255) as u8;
                }
            }
            return "flip";
        }
        2..=4 => {
            // Replace one token of a line.
            let l = rng.below(n);
            let sep = if lines[l].contains('\t') {
                '\t'
            } else if lines[l].contains(',') {
                ','
            } else {
                ' '
            };
            let mut toks: Vec<String> = lines[l].split(sep).map(str::to_string).collect();
            let t = rng.below(toks.len());
            toks[t] = rng.pick(&TOKENS).to_string();
            lines[l] = toks.join(&sep.to_string());
            "replace-token"
        }
        5 => {
            let l = rng.below(n);
            let sep = if lines[l].contains('\t') { '\t' } else { ',' };
            let mut toks: Vec<&str> = lines[l].split(sep).collect();
            if rng.chance(0.5) && toks.len() > 1 {
                toks.remove(rng.below(toks.len()));
            } else {
                toks.push("7");
            }
            lines[l] = toks.join(&sep.to_string());
            "ragged-line"
        }
        6 => {
            let l = rng.below(n);
            match rng.below(3) {
                0 => {
                    lines.remove(l);
                }
                1 => {
                    let dup = lines[l].clone();
                    lines.insert(l, dup);
                }
                _ => {
                    let m = rng.below(n);
                    lines.swap(l, m);
                }
            }
            "delete-duplicate-swap-line"
        }
        7 => {
            let l = rng.below(n + 1);
            let extra = *rng.pick(&["", "%", "% comment", "   ", "\r", "#", "1 1", "1 1 1 1"]);
            lines.insert(l.min(lines.len()), extra.to_string());
            "insert-line"
        }
        8 => {
            let text = lines.join("\r\n");
            let mut out = Vec::new();
            if rng.chance(0.5) {
                out.extend_from_slice("\u{FEFF}".as_bytes());
            }
            out.extend_from_slice(text.as_bytes());
            *bytes = out;
            return "bom-crlf";
        }
        9 => {
            let at = rng.below(bytes.len() + 1);
            let junks: [&[u8]; 6] = [b"\xFF\xFE", b"\0", b"\xC3", b"\"", b"\t\t", b",,"];
            let junk = *rng.pick(&junks);
            bytes.splice(at..at, junk.iter().copied());
            return "insert-bytes";
        }
        _ => {
            let l = rng.below(n);
            let dup = lines[l].clone();
            for _ in 0..rng.below(50) {
                lines.insert(l, dup.clone());
            }
            "repeat-line"
        }
    };
    *bytes = lines.join("\n").into_bytes();
    kind
}

// ================================================================================ h5ad

/// An array to store as a dataset.
#[derive(Clone)]
enum Arr {
    F64(Vec<f64>),
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    U64(Vec<u64>),
    /// IEEE half floats, as raw bits.
    F16(Vec<u16>),
    Str(Vec<String>),
    FixedStr(Vec<String>),
    /// A declared type and shape with no data written (storage never allocated).
    Declared(Datatype, Vec<u64>),
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn f16_type() -> Datatype {
    Datatype::FloatingPoint {
        size: 2,
        byte_order: DatatypeByteOrder::LittleEndian,
        layout: FloatingPointLayout {
            bit_offset: 0,
            bit_precision: 16,
            exponent_location: 10,
            exponent_size: 5,
            mantissa_location: 0,
            mantissa_size: 10,
            exponent_bias: 15,
        },
    }
}

fn put(ds: &mut hdf5_pure::DatasetBuilder, a: &Arr, shape: Option<&[u64]>) {
    match a {
        Arr::F64(v) => {
            ds.with_f64_data(v);
        }
        Arr::F32(v) => {
            ds.with_f32_data(v);
        }
        Arr::I64(v) => {
            ds.with_i64_data(v);
        }
        Arr::I32(v) => {
            ds.with_i32_data(v);
        }
        Arr::I8(v) => {
            ds.with_i8_data(v);
        }
        Arr::U8(v) => {
            ds.with_u8_data(v);
        }
        Arr::U64(v) => {
            ds.with_u64_data(v);
        }
        Arr::F16(v) => {
            let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            ds.with_raw_data(f16_type(), raw, v.len() as u64);
        }
        Arr::Str(v) => {
            let r: Vec<&str> = v.iter().map(String::as_str).collect();
            ds.with_vlen_strings(&r);
        }
        Arr::FixedStr(v) => {
            let r: Vec<&str> = v.iter().map(String::as_str).collect();
            if ds.with_ascii_strings(&r).is_err() {
                ds.with_vlen_strings(&r);
            }
        }
        Arr::Declared(dt, shape) => {
            ds.with_dtype(dt.clone()).with_shape(shape);
            return;
        }
    }
    if let Some(s) = shape {
        ds.with_shape(s);
    }
}

fn vlen_type() -> Datatype {
    Datatype::VariableLength {
        is_string: true,
        padding: Some(StringPadding::NullTerminate),
        charset: Some(CharacterSet::Utf8),
        base_type: Box::new(hdf5_pure::make_u8_type()),
    }
}

#[derive(Clone)]
enum XPart {
    Dense(Arr, Option<Vec<u64>>),
    Sparse {
        /// `encoding-type` (new layout) or `h5sparse_format` (old layout) value.
        encoding: Option<AttrValue>,
        shape: Option<AttrValue>,
        old_layout: bool,
        data: Option<Arr>,
        indices: Option<Arr>,
        indptr: Option<Arr>,
    },
}

#[derive(Clone)]
struct H5adParts {
    x: XPart,
    var_index: Option<Arr>,
    obs_index: Option<Arr>,
    codes: Option<Arr>,
    categories: Option<Arr>,
    depth: Option<Arr>,
    spatial: Option<(Arr, Vec<u64>)>,
    raw: bool,
    libver_earliest: bool,
}

/// The valid CSR seed: 4 cells × 3 genes, 5 stored values.
fn csr_parts() -> H5adParts {
    H5adParts {
        x: XPart::Sparse {
            encoding: Some(AttrValue::VarLenString("csr_matrix".into())),
            shape: Some(AttrValue::I64Array(vec![4, 3])),
            old_layout: false,
            data: Some(Arr::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
            indices: Some(Arr::I32(vec![0, 2, 1, 0, 2])),
            indptr: Some(Arr::I32(vec![0, 2, 3, 3, 5])),
        },
        var_index: Some(Arr::Str(strs(&["Gad2", "Lamp5", "Sst"]))),
        obs_index: Some(Arr::Str(strs(&["c1", "c2", "c3", "c4"]))),
        codes: Some(Arr::I8(vec![0, 1, 0, -1])),
        categories: Some(Arr::Str(strs(&["Astro", "Oligo"]))),
        depth: Some(Arr::F64(vec![1.0, 2.0, 3.0, 4.0])),
        spatial: Some((
            Arr::F64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
            vec![4, 2],
        )),
        raw: false,
        libver_earliest: false,
    }
}

fn dense_parts() -> H5adParts {
    H5adParts {
        x: XPart::Dense(
            Arr::I64(vec![1, 0, 2, 0, 3, 0, 0, 0, 0, 4, 0, 5]),
            Some(vec![4, 3]),
        ),
        ..csr_parts()
    }
}

fn enc_attrs(kind: &str) -> [(&'static str, AttrValue); 2] {
    [
        ("encoding-type", AttrValue::VarLenString(kind.into())),
        ("encoding-version", AttrValue::VarLenString("0.2.0".into())),
    ]
}

/// Where datasets and groups can be created: the file root or a group.
trait Parent {
    fn ds(&mut self, name: &str) -> &mut hdf5_pure::DatasetBuilder;
    fn grp(&mut self, name: &str) -> hdf5_pure::GroupBuilder;
    fn add(&mut self, g: hdf5_pure::FinishedGroup);
}

impl Parent for FileBuilder {
    fn ds(&mut self, name: &str) -> &mut hdf5_pure::DatasetBuilder {
        self.create_dataset(name)
    }
    fn grp(&mut self, name: &str) -> hdf5_pure::GroupBuilder {
        self.create_group(name)
    }
    fn add(&mut self, g: hdf5_pure::FinishedGroup) {
        self.add_group(g)
    }
}

impl Parent for hdf5_pure::GroupBuilder {
    fn ds(&mut self, name: &str) -> &mut hdf5_pure::DatasetBuilder {
        self.create_dataset(name)
    }
    fn grp(&mut self, name: &str) -> hdf5_pure::GroupBuilder {
        self.create_group(name)
    }
    fn add(&mut self, g: hdf5_pure::FinishedGroup) {
        self.add_group(g)
    }
}

fn put_x(parent: &mut dyn Parent, x: &XPart) {
    match x {
        XPart::Dense(a, shape) => {
            let ds = parent.ds("X");
            put(ds, a, shape.as_deref());
            for (k, v) in enc_attrs("array") {
                ds.set_attr(k, v);
            }
        }
        XPart::Sparse {
            encoding,
            shape,
            old_layout,
            data,
            indices,
            indptr,
        } => {
            let mut g = parent.grp("X");
            let (ek, sk) = if *old_layout {
                ("h5sparse_format", "h5sparse_shape")
            } else {
                ("encoding-type", "shape")
            };
            if let Some(e) = encoding {
                g.set_attr(ek, e.clone());
            }
            if !old_layout {
                g.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
            }
            if let Some(s) = shape {
                g.set_attr(sk, s.clone());
            }
            for (name, a) in [("data", data), ("indices", indices), ("indptr", indptr)] {
                if let Some(a) = a {
                    put(g.create_dataset(name), a, None);
                }
            }
            parent.add(g.finish());
        }
    }
}

fn build_h5ad(p: &H5adParts) -> Option<Vec<u8>> {
    let mut b = FileBuilder::new();
    if p.libver_earliest {
        b.with_libver_bounds(hdf5_pure::LibVer::Earliest, hdf5_pure::LibVer::V18);
    }
    b.set_attr("encoding-type", AttrValue::VarLenString("anndata".into()));
    b.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
    if p.raw {
        let mut raw = b.create_group("raw");
        put_x(&mut raw, &p.x);
        let mut var = raw.create_group("var");
        var.set_attr("_index", AttrValue::VarLenString("_index".into()));
        if let Some(v) = &p.var_index {
            put(var.create_dataset("_index"), v, None);
        }
        raw.add_group(var.finish());
        b.add_group(raw.finish());
        b.create_dataset("X")
            .with_f32_data(&[0.0; 12])
            .with_shape(&[4, 3]);
    } else {
        put_x(&mut b, &p.x);
    }
    for (group, index) in [("obs", &p.obs_index), ("var", &p.var_index)] {
        let mut g = b.create_group(group);
        for (k, v) in enc_attrs("dataframe") {
            g.set_attr(k, v);
        }
        g.set_attr("_index", AttrValue::VarLenString("_index".into()));
        let mut order = Vec::new();
        if let Some(i) = index {
            put(g.create_dataset("_index"), i, None);
        }
        if group == "obs" {
            if let Some(d) = &p.depth {
                put(g.create_dataset("depth"), d, None);
                order.push("depth".to_string());
            }
            if p.codes.is_some() || p.categories.is_some() {
                let mut cg = g.create_group("cell_type");
                for (k, v) in enc_attrs("categorical") {
                    cg.set_attr(k, v);
                }
                cg.set_attr("ordered", AttrValue::I8(0));
                if let Some(c) = &p.codes {
                    put(cg.create_dataset("codes"), c, None);
                }
                if let Some(c) = &p.categories {
                    put(cg.create_dataset("categories"), c, None);
                }
                g.add_group(cg.finish());
                order.push("cell_type".to_string());
            }
        }
        g.set_attr(
            "column-order",
            if order.is_empty() {
                AttrValue::F64Array(Vec::new())
            } else {
                AttrValue::VarLenStringArray(order)
            },
        );
        b.add_group(g.finish());
    }
    let mut obsm = b.create_group("obsm");
    if let Some((a, shape)) = &p.spatial {
        put(obsm.create_dataset("spatial"), a, Some(shape));
    }
    b.add_group(obsm.finish());
    catch_unwind(AssertUnwindSafe(|| b.finish().ok()))
        .ok()
        .flatten()
}

fn read_h5ad_all(path: &Path, raw: bool) -> Result<Dataset, DataError> {
    let options = H5adOptions {
        counts: if raw {
            CountSource::Raw
        } else {
            CountSource::X
        },
    };
    read_h5ad(path, &options)
}

/// The structured h5ad cases: (kind, label, parts).
fn h5ad_structured() -> Vec<(&'static str, String, H5adParts)> {
    let mut cases: Vec<(&'static str, String, H5adParts)> = Vec::new();
    let sparse = |f: &dyn Fn(&mut XPart)| {
        let mut p = csr_parts();
        f(&mut p.x);
        p
    };
    let set = |field: &'static str, a: Option<Arr>| {
        move |x: &mut XPart| {
            if let XPart::Sparse {
                data,
                indices,
                indptr,
                ..
            } = x
            {
                match field {
                    "data" => *data = a.clone(),
                    "indices" => *indices = a.clone(),
                    _ => *indptr = a.clone(),
                }
            }
        }
    };
    // Valid seeds in every layout.
    cases.push(("valid", "csr".into(), csr_parts()));
    cases.push(("valid", "dense".into(), dense_parts()));
    cases.push((
        "valid",
        "csc".into(),
        sparse(&|x| {
            if let XPart::Sparse {
                encoding,
                indptr,
                indices,
                ..
            } = x
            {
                *encoding = Some(AttrValue::VarLenString("csc_matrix".into()));
                *indptr = Some(Arr::I64(vec![0, 2, 3, 5]));
                *indices = Some(Arr::I64(vec![0, 3, 1, 0, 3]));
            }
        }),
    ));
    cases.push((
        "valid",
        "h5sparse (anndata < 0.7)".into(),
        sparse(&|x| {
            if let XPart::Sparse {
                encoding,
                shape,
                old_layout,
                ..
            } = x
            {
                *old_layout = true;
                *encoding = Some(AttrValue::VarLenString("csr".into()));
                *shape = Some(AttrValue::I64Array(vec![4, 3]));
            }
        }),
    ));
    cases.push((
        "valid",
        "raw/X".into(),
        H5adParts {
            raw: true,
            ..csr_parts()
        },
    ));
    // CSR indptr.
    for (label, v) in [
        ("indptr not monotone", vec![0, 3, 2, 3, 5]),
        ("indptr not starting at 0", vec![1, 2, 3, 3, 5]),
        ("indptr last < nnz", vec![0, 2, 3, 3, 4]),
        ("indptr last > nnz", vec![0, 2, 3, 3, 6]),
        ("indptr far out of range", vec![0, 2, 3, 3, 1 << 40]),
        ("indptr negative", vec![0, -2, 3, 3, 5]),
        ("indptr too short", vec![0, 2, 3, 5]),
        ("indptr too long", vec![0, 2, 3, 3, 5, 5]),
        ("indptr empty", vec![]),
        ("indptr i64::MAX", vec![0, 2, 3, 3, i64::MAX]),
    ] {
        cases.push((
            "csr-indptr",
            label.into(),
            sparse(&set("indptr", Some(Arr::I64(v.clone())))),
        ));
    }
    // CSR indices.
    for (label, v) in [
        ("index = n_cols", vec![0, 3, 1, 0, 2]),
        ("index huge", vec![0, 2, 1, 0, 1 << 33]),
        ("index negative", vec![0, -1, 1, 0, 2]),
        ("indices shorter than data", vec![0, 2, 1, 0]),
        ("indices longer than data", vec![0, 2, 1, 0, 2, 1]),
        ("duplicate index in a row", vec![0, 0, 1, 0, 2]),
        ("unsorted indices", vec![2, 0, 1, 2, 0]),
    ] {
        cases.push((
            "csr-indices",
            label.into(),
            sparse(&set("indices", Some(Arr::I64(v.clone())))),
        ));
    }
    // Missing parts and data length.
    for field in ["data", "indices", "indptr"] {
        cases.push((
            "csr-missing-part",
            format!("no {field}"),
            sparse(&set(field, None)),
        ));
    }
    cases.push((
        "csr-data",
        "data shorter".into(),
        sparse(&set("data", Some(Arr::F32(vec![1.0, 2.0, 3.0])))),
    ));
    cases.push((
        "csr-data",
        "data empty".into(),
        sparse(&set("data", Some(Arr::F32(vec![])))),
    ));
    cases.push((
        "csr-data",
        "data too large for f32".into(),
        sparse(&set(
            "data",
            Some(Arr::F64(vec![1.0, 2.0, 1e300, 4.0, 5.0])),
        )),
    ));
    cases.push((
        "csr-data",
        "data NaN/inf/negative".into(),
        sparse(&set(
            "data",
            Some(Arr::F64(vec![f64::NAN, f64::INFINITY, -3.0, 4.0, 5.0])),
        )),
    ));
    // dtypes.
    let dtypes: Vec<(&str, Arr)> = vec![
        ("strings", Arr::Str(strs(&["1", "2", "x", "4", "5"]))),
        (
            "fixed strings",
            Arr::FixedStr(strs(&["1", "2", "3", "4", "5"])),
        ),
        ("int8", Arr::I8(vec![1, 2, 3, 4, 5])),
        ("uint8", Arr::U8(vec![1, 2, 3, 4, 5])),
        ("uint64 huge", Arr::U64(vec![1, 2, u64::MAX, 4, 5])),
        (
            "float16",
            Arr::F16(vec![0x3C00, 0x4000, 0x4200, 0x4400, 0x4500]),
        ),
        ("float64", Arr::F64(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
        ("bool-like u8", Arr::U8(vec![1, 1, 1, 1, 1])),
    ];
    for (label, a) in &dtypes {
        cases.push((
            "dtype",
            format!("data as {label}"),
            sparse(&set("data", Some(a.clone()))),
        ));
    }
    for (label, a) in [
        (
            "indices as strings",
            Arr::Str(strs(&["0", "2", "1", "0", "2"])),
        ),
        (
            "indices as float64",
            Arr::F64(vec![0.0, 2.5, 1.0, 0.0, 2.0]),
        ),
        (
            "indices as float16",
            Arr::F16(vec![0, 0x4000, 0x3C00, 0, 0x4000]),
        ),
        (
            "indices as uint64 max",
            Arr::U64(vec![0, 2, 1, 0, u64::MAX]),
        ),
        ("indices as int8 negative", Arr::I8(vec![0, 2, -1, 0, 2])),
    ] {
        cases.push(("dtype", label.into(), sparse(&set("indices", Some(a)))));
    }
    for (label, a) in [
        (
            "indptr as strings",
            Arr::Str(strs(&["0", "2", "3", "3", "5"])),
        ),
        ("indptr as float64", Arr::F64(vec![0.0, 2.0, 3.0, 3.0, 5.0])),
        ("indptr as uint64 max", Arr::U64(vec![0, 2, 3, 3, u64::MAX])),
    ] {
        cases.push(("dtype", label.into(), sparse(&set("indptr", Some(a)))));
    }
    // Shape attribute.
    for (label, s) in [
        ("rows too small", Some(AttrValue::I64Array(vec![3, 3]))),
        ("rows too large", Some(AttrValue::I64Array(vec![5, 3]))),
        ("cols too small", Some(AttrValue::I64Array(vec![4, 2]))),
        ("cols too large", Some(AttrValue::I64Array(vec![4, 4]))),
        (
            "1e12 x 1e12",
            Some(AttrValue::I64Array(vec![
                1_000_000_000_000,
                1_000_000_000_000,
            ])),
        ),
        (
            "rows 1e12",
            Some(AttrValue::I64Array(vec![1_000_000_000_000, 3])),
        ),
        (
            "cols 1e12",
            Some(AttrValue::I64Array(vec![4, 1_000_000_000_000])),
        ),
        (
            "i64::MAX",
            Some(AttrValue::I64Array(vec![i64::MAX, i64::MAX])),
        ),
        ("u64::MAX", Some(AttrValue::U64Array(vec![u64::MAX, 3]))),
        ("negative", Some(AttrValue::I64Array(vec![-4, 3]))),
        ("1-D", Some(AttrValue::I64Array(vec![12]))),
        ("3-D", Some(AttrValue::I64Array(vec![4, 3, 1]))),
        ("empty", Some(AttrValue::I64Array(vec![]))),
        ("float", Some(AttrValue::F64Array(vec![4.5, 3.0]))),
        ("float NaN", Some(AttrValue::F64Array(vec![f64::NAN, 3.0]))),
        ("float 1e300", Some(AttrValue::F64Array(vec![1e300, 3.0]))),
        ("string", Some(AttrValue::VarLenString("(4, 3)".into()))),
        ("scalar", Some(AttrValue::I64(4))),
        ("int8", Some(AttrValue::I8Array(vec![4, 3]))),
        ("absent", None),
    ] {
        cases.push((
            "shape-attr",
            label.into(),
            sparse(&|x| {
                if let XPart::Sparse { shape, .. } = x {
                    *shape = s.clone();
                }
            }),
        ));
    }
    for (label, e) in [
        (
            "unknown encoding",
            Some(AttrValue::VarLenString("coo_matrix".into())),
        ),
        ("numeric encoding", Some(AttrValue::I64(1))),
        (
            "empty encoding",
            Some(AttrValue::VarLenString(String::new())),
        ),
        ("no encoding", None),
    ] {
        cases.push((
            "encoding-attr",
            label.into(),
            sparse(&|x| {
                if let XPart::Sparse { encoding, .. } = x {
                    *encoding = e.clone();
                }
            }),
        ));
    }
    // Dense X shapes and dtypes.
    let dense = |a: Arr, shape: Option<Vec<u64>>| H5adParts {
        x: XPart::Dense(a, shape),
        ..csr_parts()
    };
    cases.push((
        "dense-shape",
        "1-D".into(),
        dense(Arr::F32(vec![1.0; 12]), None),
    ));
    cases.push((
        "dense-shape",
        "3-D".into(),
        dense(Arr::F32(vec![1.0; 12]), Some(vec![4, 3, 1])),
    ));
    cases.push((
        "dense-shape",
        "transposed (3 x 4)".into(),
        dense(Arr::F32(vec![1.0; 12]), Some(vec![3, 4])),
    ));
    cases.push((
        "dense-shape",
        "0 x 0".into(),
        dense(Arr::F32(vec![]), Some(vec![0, 0])),
    ));
    cases.push((
        "dense-shape",
        "4 x 0".into(),
        dense(Arr::F32(vec![]), Some(vec![4, 0])),
    ));
    for (label, dt, shape) in [
        (
            "declared 1e12 x 1e12, no storage",
            hdf5_pure::make_f64_type(),
            vec![1_000_000_000_000u64, 1_000_000_000_000],
        ),
        (
            "declared 4 x 1e12, no storage",
            hdf5_pure::make_f64_type(),
            vec![4, 1_000_000_000_000],
        ),
        (
            "declared 1e9 x 3, no storage",
            hdf5_pure::make_f32_type(),
            vec![1_000_000_000, 3],
        ),
        (
            "declared 4 x 3, no storage",
            hdf5_pure::make_f64_type(),
            vec![4, 3],
        ),
        (
            "declared 2^32 x 2^32 strings, no storage",
            vlen_type(),
            vec![1 << 32, 1 << 32],
        ),
    ] {
        cases.push((
            "huge-declared",
            label.into(),
            dense(Arr::Declared(dt, shape.clone()), Some(shape)),
        ));
    }
    for (label, a) in [
        (
            "strings",
            Arr::Str((0..12).map(|i| i.to_string()).collect()),
        ),
        (
            "fixed strings",
            Arr::FixedStr((0..12).map(|i| format!("v{i}")).collect()),
        ),
        ("int8", Arr::I8(vec![1; 12])),
        ("uint8", Arr::U8(vec![1; 12])),
        ("uint64 max", Arr::U64(vec![u64::MAX; 12])),
        ("float16", Arr::F16(vec![0x3C00; 12])),
        (
            "float16 inf/nan",
            Arr::F16(vec![0x7C00, 0x7E00, 0xFC00, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ),
        ("float64 1e300", Arr::F64(vec![1e300; 12])),
    ] {
        cases.push((
            "dtype",
            format!("dense X as {label}"),
            dense(a, Some(vec![4, 3])),
        ));
    }
    // Names and annotations.
    let names: Vec<(&str, Option<Arr>)> = vec![
        ("var index missing", None),
        ("var index numeric", Some(Arr::F64(vec![1.0, 2.0, 3.0]))),
        (
            "var index too short",
            Some(Arr::Str(strs(&["Gad2", "Lamp5"]))),
        ),
        (
            "var index too long",
            Some(Arr::Str(strs(&["Gad2", "Lamp5", "Sst", "Vip"]))),
        ),
        ("var index empty", Some(Arr::Str(vec![]))),
        (
            "var duplicate names",
            Some(Arr::Str(strs(&["Gad2", "Gad2", "Sst"]))),
        ),
        (
            "var duplicate names, other case",
            Some(Arr::Str(strs(&["Gad2", "GAD2", "Sst"]))),
        ),
        ("var empty names", Some(Arr::Str(strs(&["", "", "Sst"])))),
        (
            "var whitespace name",
            Some(Arr::Str(strs(&["Gad2", " ", "Sst"]))),
        ),
        (
            "var spreadsheet dates",
            Some(Arr::Str(strs(&["2-Mar", "1-Sep", "MARCH2"]))),
        ),
        (
            "var date and symbol",
            Some(Arr::Str(strs(&["1-Mar", "MARCH1", "march1"]))),
        ),
        (
            "var fixed strings",
            Some(Arr::FixedStr(strs(&["Gad2", "Lamp5", "Sst"]))),
        ),
        (
            "var NUL in name",
            Some(Arr::Str(strs(&["Gad2\0", "Lamp5", "Sst"]))),
        ),
        (
            "var declared huge",
            Some(Arr::Declared(vlen_type(), vec![1 << 40])),
        ),
        ("var 2-D", Some(Arr::Declared(vlen_type(), vec![3, 1]))),
    ];
    for (label, a) in names {
        cases.push((
            "names",
            label.into(),
            H5adParts {
                var_index: a.clone(),
                ..csr_parts()
            },
        ));
        cases.push((
            "names",
            format!("{label} (dense X)"),
            H5adParts {
                var_index: a,
                ..dense_parts()
            },
        ));
    }
    for (label, a) in [
        ("obs index missing", None),
        ("obs index too short", Some(Arr::Str(strs(&["c1"])))),
        ("obs index numeric", Some(Arr::I64(vec![1, 2, 3, 4]))),
        (
            "obs index declared huge",
            Some(Arr::Declared(vlen_type(), vec![1 << 40])),
        ),
    ] {
        cases.push((
            "names",
            label.into(),
            H5adParts {
                obs_index: a,
                ..csr_parts()
            },
        ));
    }
    for (label, codes, cats) in [
        (
            "code beyond categories",
            Some(Arr::I8(vec![0, 5, 0, 1])),
            None,
        ),
        (
            "code very negative",
            Some(Arr::I64(vec![0, -7, 0, 1])),
            None,
        ),
        ("code huge", Some(Arr::I64(vec![0, 1 << 40, 0, 1])), None),
        (
            "codes as float",
            Some(Arr::F64(vec![0.5, 1.0, 0.0, f64::NAN])),
            None,
        ),
        (
            "codes as strings",
            Some(Arr::Str(strs(&["a", "b", "c", "d"]))),
            None,
        ),
        ("codes too short", Some(Arr::I8(vec![0, 1])), None),
        (
            "codes missing",
            None,
            Some(Arr::Str(strs(&["Astro", "Oligo"]))),
        ),
        ("categories missing", Some(Arr::I8(vec![0, 1, 0, 1])), None),
        (
            "categories numeric",
            Some(Arr::I8(vec![0, 1, 0, 1])),
            Some(Arr::F64(vec![1.5, 2.5])),
        ),
        (
            "categories empty",
            Some(Arr::I8(vec![0, 1, 0, 1])),
            Some(Arr::Str(vec![])),
        ),
    ] {
        let codes_set = codes.is_some();
        let mut p = csr_parts();
        p.codes = codes;
        if cats.is_some() || !codes_set || label == "categories missing" {
            p.categories = cats;
        }
        cases.push(("obs-columns", label.into(), p));
    }
    for (label, d) in [
        ("numeric column too short", Arr::F64(vec![1.0])),
        (
            "numeric column as strings",
            Arr::Str(strs(&["a", "b", "c", "d"])),
        ),
        (
            "numeric column declared huge",
            Arr::Declared(hdf5_pure::make_f64_type(), vec![1 << 40]),
        ),
    ] {
        cases.push((
            "obs-columns",
            label.into(),
            H5adParts {
                depth: Some(d),
                ..csr_parts()
            },
        ));
    }
    for (label, a, shape) in [
        ("spatial 1-D", Arr::F64(vec![1.0; 8]), vec![8]),
        ("spatial wrong rows", Arr::F64(vec![1.0; 6]), vec![3, 2]),
        ("spatial 0 columns", Arr::F64(vec![]), vec![4, 0]),
        (
            "spatial as strings",
            Arr::Str((0..8).map(|i| i.to_string()).collect()),
            vec![4, 2],
        ),
        ("spatial 4 x 5", Arr::F64(vec![1.0; 20]), vec![4, 5]),
        (
            "spatial declared huge",
            Arr::Declared(hdf5_pure::make_f64_type(), vec![4, 1 << 40]),
            vec![4, 1 << 40],
        ),
    ] {
        cases.push((
            "obsm-spatial",
            label.into(),
            H5adParts {
                spatial: Some((a, shape)),
                ..csr_parts()
            },
        ));
    }
    // Every case also in the oldest format the builder writes.
    let n = cases.len();
    for i in 0..n {
        let (kind, label, mut p) = cases[i].clone();
        if kind == "valid" {
            p.libver_earliest = true;
            cases.push((kind, format!("{label} (libver earliest)"), p));
        }
    }
    cases
}

/// Finds every occurrence of the little-endian u64 pair `dims` and writes `new` over it
/// (dataspace dimensions in files without metadata checksums).
fn patch_dims(bytes: &[u8], dims: &[u64], new: &[u64]) -> Option<Vec<u8>> {
    let pat: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    let rep: Vec<u8> = new.iter().flat_map(|d| d.to_le_bytes()).collect();
    let mut out = bytes.to_vec();
    let mut from = 0;
    let mut hit = false;
    while let Some(p) = find(&out[from..], &pat) {
        out[from + p..from + p + rep.len()].copy_from_slice(&rep);
        from += p + pat.len();
        hit = true;
    }
    hit.then_some(out)
}

#[test]
fn fuzz_h5ad() {
    let mut h = Harness::new("h5ad");
    let path = h.path("case.h5ad");
    // Structured cases.
    let mut seeds: Vec<(String, Vec<u8>, bool)> = Vec::new();
    for (kind, label, parts) in h5ad_structured() {
        let Some(bytes) = build_h5ad(&parts) else {
            continue;
        };
        write(&path, &bytes);
        let raw = parts.raw;
        h.case(kind, &label, || read_h5ad_all(&path, raw));
        if kind == "valid" {
            seeds.push((label, bytes, raw));
        }
    }
    // The crate's own writer.
    let out = H5adOutput {
        obs_names: strs(&["c1", "c2", "c3"]),
        var_names: strs(&["Gad2", "Lamp5"]),
        x: vec![0.0, 1.0, 2.0, 0.0, 3.0, 4.0],
        layers: vec![("counts".into(), vec![1.0; 6])],
        obsm: vec![("spatial".into(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2)],
        obs: vec![(
            "cell_type".into(),
            Column::Categorical {
                codes: vec![0, 1, -1],
                categories: strs(&["Astro", "Oligo"]),
            },
        )],
        uns: vec![("method".into(), "fuzz".into())],
    };
    write_h5ad(&path, &out).unwrap();
    let own = std::fs::read(&path).unwrap();
    h.case("valid", "write_h5ad output", || read_h5ad_all(&path, false));
    seeds.push(("write_h5ad output".into(), own, false));

    // Real files: whole (small ones) and with patched dataspace dimensions.
    let mut real: Vec<(String, Vec<u8>, usize)> = Vec::new();
    for (rel, weight) in [
        ("zeisel2015_gpsfish/osmfish537_spatial.h5ad", 6),
        ("osmfish_smfish/smfish.h5ad", 2),
        ("zeisel2015_descend_subset/zeisel_descend_subset.h5ad", 1),
    ] {
        if let Some(bytes) = real_file(rel) {
            real.push((rel.to_string(), bytes, weight));
        }
    }
    for (rel, bytes, _) in &real {
        write(&path, bytes);
        h.case("valid", rel, || read_h5ad_all(&path, false));
    }
    if let Some((_, bytes, _)) = real.iter().find(|(r, _, _)| r.contains("smfish.h5ad")) {
        for (label, new) in [
            (
                "X dims 1e12 x 1e12",
                [1_000_000_000_000u64, 1_000_000_000_000],
            ),
            ("X dims 4530 x 1e12", [4530, 1_000_000_000_000]),
            ("X dims 4530e3 x 33", [4_530_000, 33]),
            ("X dims 4531 x 33", [4531, 33]),
            ("X dims 4530 x 34", [4530, 34]),
            ("X dims 0 x 33", [0, 33]),
            ("X dims u64::MAX x 2", [u64::MAX, 2]),
        ] {
            if let Some(p) = patch_dims(bytes, &[4530, 33], &new) {
                write(&path, &p);
                h.case("huge-declared", &format!("smfish.h5ad {label}"), || {
                    read_h5ad_all(&path, false)
                });
            }
        }
        for (label, new) in [
            ("obs index 1e12", 1_000_000_000_000u64),
            ("obs index 4531", 4531),
            ("obs index u64::MAX", u64::MAX),
        ] {
            // 1-D dataspaces of 4530 (obs index and columns): the u64 followed by a 0
            // max-dims / padding is too loose to patch, so patch the (4530) dims followed
            // by 4530 max dims.
            if let Some(p) = patch_dims(bytes, &[4530, 4530], &[new, new]) {
                write(&path, &p);
                h.case("huge-declared", &format!("smfish.h5ad {label}"), || {
                    read_h5ad_all(&path, false)
                });
            }
        }
    }
    if let Some((_, bytes, _)) = real
        .iter()
        .find(|(r, _, _)| r.contains("zeisel_descend_subset"))
    {
        // The CSR shape attribute (int64 [1464, 1095]) and indptr length (1465).
        for (label, dims, new) in [
            (
                "shape attr 1e12 x 1e12",
                vec![1464u64, 1095],
                vec![1_000_000_000_000u64, 1_000_000_000_000],
            ),
            (
                "shape attr rows 1e12",
                vec![1464, 1095],
                vec![1_000_000_000_000, 1095],
            ),
            (
                "shape attr cols 2^40",
                vec![1464, 1095],
                vec![1464, 1 << 40],
            ),
            ("shape attr 1465 x 1095", vec![1464, 1095], vec![1465, 1095]),
        ] {
            if let Some(p) = patch_dims(bytes, &dims, &new) {
                write(&path, &p);
                h.case("shape-attr", &format!("zeisel subset {label}"), || {
                    read_h5ad_all(&path, false)
                });
            }
        }
        // The 1-D dataspaces (size, unlimited max size: chunked, resizable) of X/data and
        // X/indices (708,681 values) and of X/indptr (1,465): lengths of 2^40 and off by one.
        for (label, old, new) in [
            ("data/indices length 2^40", 708_681u64, 1u64 << 40),
            ("data/indices length + 1", 708_681, 708_682),
            ("indptr length 2^40", 1465, 1 << 40),
            ("indptr length - 1", 1465, 1464),
        ] {
            if let Some(p) = patch_dims(bytes, &[old, u64::MAX], &[new, u64::MAX]) {
                write(&path, &p);
                h.case("huge-declared", &format!("zeisel subset {label}"), || {
                    read_h5ad_all(&path, false)
                });
            }
        }
    }
    // Truncation at evenly spaced offsets of every builder seed.
    for (label, bytes, raw) in &seeds {
        let step = (bytes.len() / 60).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            write(&path, &bytes[..cut]);
            let raw = *raw;
            h.case("truncate", &format!("{label} at {cut}"), || {
                read_h5ad_all(&path, raw)
            });
        }
    }
    for (rel, bytes, _) in &real {
        for i in 0..24 {
            let cut = bytes.len() * i / 24 + (i * 7919) % 4096;
            let cut = cut.min(bytes.len() - 1);
            write(&path, &bytes[..cut]);
            h.case("truncate", &format!("{rel} at {cut}"), || {
                read_h5ad_all(&path, false)
            });
        }
    }
    // Random mutations.
    let budget = random_budget(6000);
    let mut rng = Rng(base_seed() ^ 0x4835_4144);
    let hot_seeds: Vec<Vec<usize>> = seeds.iter().map(|(_, b, _)| hot_offsets(b)).collect();
    let hot_real: Vec<Vec<usize>> = real.iter().map(|(_, b, _)| hot_offsets(b)).collect();
    let real_weight: usize = real.iter().map(|r| r.2).sum();
    for i in 0..budget {
        // About 40 % of the cases on real files when there are some.
        let (label, mut bytes, raw, hot) = if real_weight > 0 && rng.chance(0.4) {
            let mut w = rng.below(real_weight);
            let mut k = 0;
            while w >= real[k].2 {
                w -= real[k].2;
                k += 1;
            }
            (real[k].0.clone(), real[k].1.clone(), false, &hot_real[k])
        } else {
            let k = rng.below(seeds.len());
            (
                seeds[k].0.clone(),
                seeds[k].1.clone(),
                seeds[k].2,
                &hot_seeds[k],
            )
        };
        let mut kinds = Vec::new();
        for _ in 0..1 + rng.below(3) {
            kinds.push(mutate_bytes(&mut rng, &mut bytes, hot));
        }
        write(&path, &bytes);
        let kind = format!("random {}", kinds[0]);
        let via_any = rng.chance(0.2);
        h.case(&kind, &format!("#{i} {label} {kinds:?}"), || {
            if via_any {
                read_any(&path)
            } else {
                read_h5ad_all(&path, raw)
            }
        });
    }
    h.finish();
}

// ================================================================================ loom

#[derive(Clone)]
struct LoomParts {
    /// `/matrix` (genes × cells), its shape, and whether it is chunked and deflated.
    matrix: Option<(Arr, Option<Vec<u64>>, bool)>,
    gene: Option<Arr>,
    cell_id: Option<Arr>,
    x: Option<Arr>,
    y: Option<Arr>,
    spatial: Option<(Arr, Vec<u64>)>,
    cluster: Option<Arr>,
}

fn loom_parts() -> LoomParts {
    LoomParts {
        matrix: Some((
            Arr::F64(vec![
                1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 4.0, 0.0, 0.0, 5.0,
            ]),
            Some(vec![3, 4]),
            false,
        )),
        gene: Some(Arr::FixedStr(strs(&["gad2", "lamp5", "sst"]))),
        cell_id: Some(Arr::Str(strs(&["c1", "c2", "c3", "c4"]))),
        x: Some(Arr::F64(vec![1.0, 2.0, 3.0, 4.0])),
        y: Some(Arr::F64(vec![5.0, 6.0, 7.0, 8.0])),
        spatial: Some((Arr::F64(vec![1.0; 8]), vec![4, 2])),
        cluster: Some(Arr::I64(vec![0, 1, 0, 1])),
    }
}

fn build_loom(p: &LoomParts) -> Option<Vec<u8>> {
    let mut b = FileBuilder::new();
    b.set_attr("LOOM_SPEC_VERSION", AttrValue::VarLenString("3.0.0".into()));
    if let Some((a, shape, chunked)) = &p.matrix {
        let ds = b.create_dataset("matrix");
        put(ds, a, shape.as_deref());
        if *chunked {
            ds.with_chunks(&[2, 2]).with_deflate(4);
        }
    }
    let mut rows = b.create_group("row_attrs");
    if let Some(g) = &p.gene {
        put(rows.create_dataset("Gene"), g, None);
    }
    b.add_group(rows.finish());
    let mut cols = b.create_group("col_attrs");
    for (name, a) in [
        ("CellID", &p.cell_id),
        ("X", &p.x),
        ("Y", &p.y),
        ("ClusterID", &p.cluster),
    ] {
        if let Some(a) = a {
            put(cols.create_dataset(name), a, None);
        }
    }
    if let Some((a, shape)) = &p.spatial {
        put(cols.create_dataset("Spatial_coordinates"), a, Some(shape));
    }
    b.add_group(cols.finish());
    b.add_group(b_empty("layers"));
    catch_unwind(AssertUnwindSafe(|| b.finish().ok()))
        .ok()
        .flatten()
}

fn b_empty(name: &str) -> hdf5_pure::FinishedGroup {
    FileBuilder::new().create_group(name).finish()
}

fn loom_structured() -> Vec<(&'static str, String, LoomParts)> {
    let mut cases = Vec::new();
    let base = loom_parts();
    let with_matrix = |a: Arr, shape: Option<Vec<u64>>, chunked: bool| LoomParts {
        matrix: Some((a, shape, chunked)),
        ..loom_parts()
    };
    cases.push(("valid", "contiguous".to_string(), base.clone()));
    let LoomParts { matrix, .. } = &base;
    let (m, s, _) = matrix.clone().unwrap();
    cases.push(("valid", "chunked + deflate".into(), with_matrix(m, s, true)));
    cases.push((
        "matrix-shape",
        "1-D".into(),
        with_matrix(Arr::F64(vec![1.0; 12]), None, false),
    ));
    cases.push((
        "matrix-shape",
        "3-D".into(),
        with_matrix(Arr::F64(vec![1.0; 12]), Some(vec![3, 4, 1]), false),
    ));
    cases.push((
        "matrix-shape",
        "transposed (4 x 3)".into(),
        with_matrix(Arr::F64(vec![1.0; 12]), Some(vec![4, 3]), false),
    ));
    cases.push((
        "matrix-shape",
        "0 x 4".into(),
        with_matrix(Arr::F64(vec![]), Some(vec![0, 4]), false),
    ));
    cases.push((
        "matrix-shape",
        "3 x 0".into(),
        with_matrix(Arr::F64(vec![]), Some(vec![3, 0]), false),
    ));
    for (label, a) in [
        (
            "strings",
            Arr::Str((0..12).map(|i| i.to_string()).collect()),
        ),
        ("int8", Arr::I8(vec![1; 12])),
        ("uint64 max", Arr::U64(vec![u64::MAX; 12])),
        ("float16", Arr::F16(vec![0x3C00; 12])),
        ("float64 1e300", Arr::F64(vec![1e300; 12])),
        (
            "NaN and negative",
            Arr::F64(vec![
                f64::NAN,
                -1.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
            ]),
        ),
    ] {
        cases.push((
            "dtype",
            format!("matrix as {label}"),
            with_matrix(a.clone(), Some(vec![3, 4]), false),
        ));
        cases.push((
            "dtype",
            format!("matrix as {label}, chunked"),
            with_matrix(a, Some(vec![3, 4]), true),
        ));
    }
    for (label, dt, shape) in [
        (
            "declared 1e12 x 1e12, no storage",
            hdf5_pure::make_f64_type(),
            vec![1_000_000_000_000u64, 1_000_000_000_000],
        ),
        (
            "declared 3 x 1e12, no storage",
            hdf5_pure::make_f64_type(),
            vec![3, 1_000_000_000_000],
        ),
        (
            "declared 0 x 1e12, no storage",
            hdf5_pure::make_f64_type(),
            vec![0, 1_000_000_000_000],
        ),
    ] {
        cases.push((
            "huge-declared",
            label.into(),
            with_matrix(Arr::Declared(dt, shape.clone()), Some(shape), false),
        ));
    }
    cases.push((
        "missing",
        "no /matrix".into(),
        LoomParts {
            matrix: None,
            ..loom_parts()
        },
    ));
    let genes: Vec<(&str, Option<Arr>)> = vec![
        ("no Gene attribute", None),
        ("Gene numeric", Some(Arr::F64(vec![1.0, 2.0, 3.0]))),
        ("Gene too short", Some(Arr::Str(strs(&["gad2", "lamp5"])))),
        (
            "Gene too long",
            Some(Arr::Str(strs(&["gad2", "lamp5", "sst", "vip"]))),
        ),
        (
            "Gene duplicates",
            Some(Arr::Str(strs(&["gad2", "Gad2", "gad2"]))),
        ),
        (
            "Gene empty names",
            Some(Arr::FixedStr(strs(&["", "lamp5", ""]))),
        ),
        (
            "Gene spreadsheet dates",
            Some(Arr::Str(strs(&["2-Mar", "1-Sep", "1-Dec"]))),
        ),
        ("Gene 2-D", Some(Arr::Declared(vlen_type(), vec![3, 1]))),
    ];
    for (label, g) in genes {
        cases.push((
            "names",
            label.into(),
            LoomParts {
                gene: g,
                ..loom_parts()
            },
        ));
    }
    for (label, p) in [
        (
            "CellID too short",
            LoomParts {
                cell_id: Some(Arr::Str(strs(&["c1"]))),
                ..loom_parts()
            },
        ),
        (
            "CellID numeric",
            LoomParts {
                cell_id: Some(Arr::I64(vec![1, 2, 3, 4])),
                ..loom_parts()
            },
        ),
        (
            "CellID duplicates",
            LoomParts {
                cell_id: Some(Arr::Str(strs(&["c1", "c1", "c1", "c1"]))),
                ..loom_parts()
            },
        ),
        (
            "X as strings",
            LoomParts {
                x: Some(Arr::Str(strs(&["a", "b", "c", "d"]))),
                ..loom_parts()
            },
        ),
        (
            "X too long",
            LoomParts {
                x: Some(Arr::F64(vec![1.0; 5])),
                ..loom_parts()
            },
        ),
        (
            "spatial 4 x 5",
            LoomParts {
                spatial: Some((Arr::F64(vec![1.0; 20]), vec![4, 5])),
                ..loom_parts()
            },
        ),
        (
            "spatial 4 x 0",
            LoomParts {
                spatial: Some((Arr::F64(vec![]), vec![4, 0])),
                ..loom_parts()
            },
        ),
        (
            "spatial 4 x 2 x 1",
            LoomParts {
                spatial: Some((Arr::F64(vec![1.0; 8]), vec![4, 2, 1])),
                ..loom_parts()
            },
        ),
        (
            "spatial as strings",
            LoomParts {
                spatial: Some((
                    Arr::Str((0..8).map(|i| i.to_string()).collect()),
                    vec![4, 2],
                )),
                ..loom_parts()
            },
        ),
        (
            "cluster float16",
            LoomParts {
                cluster: Some(Arr::F16(vec![0x3C00; 4])),
                ..loom_parts()
            },
        ),
    ] {
        cases.push(("col-attrs", label.into(), p));
    }
    cases
}

fn read_loom_default(path: &Path) -> Result<Dataset, DataError> {
    read_loom(path, &LoomOptions::default())
}

#[test]
fn fuzz_loom() {
    let mut h = Harness::new("loom");
    let path = h.path("case.loom");
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (kind, label, parts) in loom_structured() {
        let Some(bytes) = build_loom(&parts) else {
            continue;
        };
        write(&path, &bytes);
        h.case(kind, &label, || read_loom_default(&path));
        if kind == "valid" {
            seeds.push((label, bytes));
        }
    }
    // Options that name something absent.
    if let Some((_, bytes)) = seeds.first() {
        write(&path, bytes);
        h.case("missing", "layer absent", || {
            read_loom(
                &path,
                &LoomOptions {
                    layer: Some("spliced".into()),
                    ..Default::default()
                },
            )
        });
        h.case("missing", "gene attribute absent", || {
            read_loom(
                &path,
                &LoomOptions {
                    gene_attr: Some("Symbol".into()),
                    ..Default::default()
                },
            )
        });
    }
    let mut real: Vec<(String, Vec<u8>, usize)> = Vec::new();
    for (rel, weight) in [
        ("starmap_mpfc/mpfc-starmap.loom", 3),
        ("osmfish_raw/osmFISH_SScortex_mouse_all_cells.loom", 1),
    ] {
        if let Some(bytes) = real_file(rel) {
            write(&path, &bytes);
            h.case("valid", rel, || read_loom_default(&path));
            real.push((rel.to_string(), bytes, weight));
        }
    }
    for (rel, bytes, _) in &real {
        let dims: &[u64] = if rel.contains("starmap") {
            &[158, 3704]
        } else {
            &[33, 6471]
        };
        for (label, new) in [
            ("1e12 x 1e12", vec![1_000_000_000_000u64, 1_000_000_000_000]),
            ("cells x 100", vec![dims[0], dims[1] * 100]),
            ("cells + 1", vec![dims[0], dims[1] + 1]),
            ("genes + 1", vec![dims[0] + 1, dims[1]]),
            ("0 x cells", vec![0, dims[1]]),
            ("genes x 2^40", vec![dims[0], 1 << 40]),
            ("u64::MAX x 1", vec![u64::MAX, 1]),
        ] {
            if let Some(p) = patch_dims(bytes, dims, &new) {
                write(&path, &p);
                h.case(
                    "huge-declared",
                    &format!("{rel}: /matrix dims {label}"),
                    || read_loom_default(&path),
                );
            }
        }
        for i in 0..24 {
            let cut = (bytes.len() * i / 24 + (i * 7919) % 4096).min(bytes.len() - 1);
            write(&path, &bytes[..cut]);
            h.case("truncate", &format!("{rel} at {cut}"), || {
                read_loom_default(&path)
            });
        }
    }
    for (label, bytes) in &seeds {
        let step = (bytes.len() / 60).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            write(&path, &bytes[..cut]);
            h.case("truncate", &format!("{label} at {cut}"), || {
                read_loom_default(&path)
            });
        }
    }
    let budget = random_budget(3000);
    let mut rng = Rng(base_seed() ^ 0x4C4F_4F4D);
    let hot_seeds: Vec<Vec<usize>> = seeds.iter().map(|(_, b)| hot_offsets(b)).collect();
    let hot_real: Vec<Vec<usize>> = real.iter().map(|(_, b, _)| hot_offsets(b)).collect();
    let real_weight: usize = real.iter().map(|r| r.2).sum();
    for i in 0..budget {
        let (label, mut bytes, hot) = if real_weight > 0 && rng.chance(0.5) {
            let mut w = rng.below(real_weight);
            let mut k = 0;
            while w >= real[k].2 {
                w -= real[k].2;
                k += 1;
            }
            (real[k].0.clone(), real[k].1.clone(), &hot_real[k])
        } else {
            let k = rng.below(seeds.len());
            (seeds[k].0.clone(), seeds[k].1.clone(), &hot_seeds[k])
        };
        let mut kinds = Vec::new();
        for _ in 0..1 + rng.below(3) {
            kinds.push(mutate_bytes(&mut rng, &mut bytes, hot));
        }
        write(&path, &bytes);
        let via_any = rng.chance(0.2);
        h.case(
            &format!("random {}", kinds[0]),
            &format!("#{i} {label} {kinds:?}"),
            || {
                if via_any {
                    read_any(&path)
                } else {
                    read_loom_default(&path)
                }
            },
        );
    }
    h.finish();
}

// ================================================================ 10x / MatrixMarket

/// The files of one case: (file name, contents).
type Files = Vec<(String, Vec<u8>)>;

/// A 10x folder: (file name, contents) — matrix genes × cells.
fn tenx_seed(gz: bool) -> Vec<(String, Vec<u8>)> {
    let matrix = "%%MatrixMarket matrix coordinate integer general\n%metadata_json: {}\n\
                  3 4 5\n1 1 5\n3 1 1\n2 2 7\n3 4 2\n1 3 1\n";
    let features = "ENSMUSG1\tGad2\tGene Expression\nENSMUSG2\tLamp5\tGene Expression\n\
                    ENSMUSG3\tSst\tGene Expression\n";
    let barcodes = "AAAC-1\nAAAG-1\nAACT-1\nAAGG-1\n";
    let mut files = vec![
        ("matrix.mtx".to_string(), matrix.as_bytes().to_vec()),
        ("features.tsv".to_string(), features.as_bytes().to_vec()),
        ("barcodes.tsv".to_string(), barcodes.as_bytes().to_vec()),
    ];
    if gz {
        for f in &mut files {
            f.0.push_str(".gz");
            f.1 = gzip(&f.1);
        }
    }
    files
}

/// A loose MatrixMarket file with `.csv` name files (header, extra cell columns).
fn loose_seed() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "counts.mtx".into(),
            b"%%MatrixMarket matrix coordinate pattern general\n3 2 3\n1 1\n2 2\n3 1\n".to_vec(),
        ),
        ("genes.csv".into(), b"gene\nGad2\nLamp5\nSst\n".to_vec()),
        (
            "cells.csv".into(),
            b"cell,cell_type,depth\nc1,Astro,1\n\"c,2\",Oligo,2\n".to_vec(),
        ),
    ]
}

/// A small valid piece of the real Zeisel MatrixMarket copy: the first `g` genes × `c` cells.
fn real_mtx_seed(g: usize, c: usize) -> Option<Vec<(String, Vec<u8>)>> {
    use std::io::{BufRead, BufReader};
    let dir = data_dir()?.join("zeisel2015_descend_subset");
    let f = std::fs::File::open(dir.join("counts.mtx.gz")).ok()?;
    let r = BufReader::new(flate2::read::GzDecoder::new(f));
    let mut entries = Vec::new();
    let mut header = String::new();
    let mut seen_size = false;
    for line in r.lines() {
        let line = line.ok()?;
        if line.starts_with('%') {
            if header.is_empty() {
                header = line;
            }
            continue;
        }
        if !seen_size {
            seen_size = true;
            continue;
        }
        let t: Vec<usize> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if t.len() == 3 && t[0] <= g && t[1] <= c {
            entries.push(line);
        }
    }
    let mut m = format!("{header}\n{g} {c} {}\n", entries.len());
    for e in &entries {
        m.push_str(e);
        m.push('\n');
    }
    let genes = std::fs::read_to_string(dir.join("genes.txt")).ok()?;
    let genes: String = genes.lines().take(g).map(|l| format!("{l}\n")).collect();
    let cells = std::fs::read_to_string(dir.join("cells.csv")).ok()?;
    let cells: String = cells
        .lines()
        .take(c + 1)
        .map(|l| format!("{l}\n"))
        .collect();
    Some(vec![
        ("counts.mtx".into(), m.into_bytes()),
        ("genes.txt".into(), genes.into_bytes()),
        ("cells.csv".into(), cells.into_bytes()),
    ])
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    for (name, bytes) in files {
        write(&dir.join(name), bytes);
    }
}

/// Reads a folder as the user would: 10x folders with read_10x_dir, loose files with read_mtx.
fn read_mtx_folder(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Dataset, DataError> {
    let has = |n: &str| files.iter().any(|f| f.0 == n);
    if has("counts.mtx") {
        let genes = if has("genes.csv") {
            "genes.csv"
        } else {
            "genes.txt"
        };
        read_mtx(
            &dir.join("counts.mtx"),
            &dir.join(genes),
            &dir.join("cells.csv"),
        )
    } else {
        read_10x_dir(dir)
    }
}

fn mtx_structured() -> Vec<(&'static str, String, Files)> {
    let mut cases = Vec::new();
    let with_matrix = |m: &str| {
        let mut f = tenx_seed(false);
        f[0].1 = m.as_bytes().to_vec();
        f
    };
    cases.push(("valid", "10x".to_string(), tenx_seed(false)));
    cases.push(("valid", "10x gzip".to_string(), tenx_seed(true)));
    cases.push(("valid", "loose, csv names".to_string(), loose_seed()));
    let hdr = "%%MatrixMarket matrix coordinate integer general\n";
    for (label, m) in [
        ("empty file", String::new()),
        ("only the header", hdr.to_string()),
        ("no header", "3 4 1\n1 1 5\n".to_string()),
        (
            "array format",
            "%%MatrixMarket matrix array real general\n3 4\n1\n2\n".to_string(),
        ),
        (
            "complex field",
            "%%MatrixMarket matrix coordinate complex general\n3 4 1\n1 1 5 0\n".to_string(),
        ),
        (
            "symmetric",
            "%%MatrixMarket matrix coordinate integer symmetric\n3 4 1\n2 1 5\n".to_string(),
        ),
        (
            "skew-symmetric",
            "%%MatrixMarket matrix coordinate real skew-symmetric\n3 4 1\n2 1 5\n".to_string(),
        ),
        (
            "hermitian",
            "%%MatrixMarket matrix coordinate complex hermitian\n3 4 1\n2 1 5 0\n".to_string(),
        ),
        (
            "upper-case header",
            "%%MATRIXMARKET MATRIX COORDINATE INTEGER GENERAL\n3 4 1\n1 1 5\n".to_string(),
        ),
        ("header, comments, no size line", format!("{hdr}% a\n% b\n")),
        ("size line with 2 fields", format!("{hdr}3 4\n1 1 5\n")),
        ("size line with 4 fields", format!("{hdr}3 4 1 9\n1 1 5\n")),
        ("negative size", format!("{hdr}-3 4 1\n1 1 5\n")),
        ("size not a number", format!("{hdr}three 4 1\n1 1 5\n")),
        (
            "10^15 entries declared",
            format!("{hdr}3 4 1000000000000000\n1 1 5\n"),
        ),
        (
            "2^40 entries declared",
            format!("{hdr}3 4 1099511627776\n1 1 5\n"),
        ),
        (
            "more entries declared than rows x cols",
            format!("{hdr}3 4 13\n1 1 5\n"),
        ),
        (
            "10^15 rows declared",
            format!("{hdr}1000000000000000 4 1\n1 1 5\n"),
        ),
        (
            "10^15 x 10^15 declared",
            format!("{hdr}1000000000000000 1000000000000000 1\n1 1 5\n"),
        ),
        (
            "usize::MAX rows",
            format!("{hdr}18446744073709551615 4 1\n1 1 5\n"),
        ),
        (
            "rows overflow usize",
            format!("{hdr}99999999999999999999 4 1\n1 1 5\n"),
        ),
        ("0 x 0 x 0", format!("{hdr}0 0 0\n")),
        (
            "fewer entries than declared",
            format!("{hdr}3 4 5\n1 1 5\n"),
        ),
        (
            "more entries than declared",
            format!("{hdr}3 4 1\n1 1 5\n2 2 3\n"),
        ),
        ("index 0", format!("{hdr}3 4 1\n0 1 5\n")),
        ("row index > rows", format!("{hdr}3 4 1\n4 1 5\n")),
        ("column index > cols", format!("{hdr}3 4 1\n1 5 5\n")),
        ("negative index", format!("{hdr}3 4 1\n-1 1 5\n")),
        (
            "index 2^64",
            format!("{hdr}3 4 1\n18446744073709551616 1 5\n"),
        ),
        ("value not a number", format!("{hdr}3 4 1\n1 1 five\n")),
        ("value missing", format!("{hdr}3 4 1\n1 1\n")),
        ("value 1e40", format!("{hdr}3 4 1\n1 1 1e40\n")),
        ("value NaN", format!("{hdr}3 4 1\n1 1 nan\n")),
        ("value negative", format!("{hdr}3 4 1\n1 1 -3\n")),
        (
            "value real in an integer matrix",
            format!("{hdr}3 4 1\n1 1 2.5\n"),
        ),
        ("duplicate entries", format!("{hdr}3 4 2\n1 1 5\n1 1 5\n")),
        (
            "entries cancel to zero",
            format!("{hdr}3 4 2\n1 1 5\n1 1 -5\n"),
        ),
        ("extra fields on an entry", format!("{hdr}3 4 1\n1 1 5 7\n")),
        (
            "CRLF line ends",
            "%%MatrixMarket matrix coordinate integer general\r\n3 4 1\r\n1 1 5\r\n".to_string(),
        ),
        (
            "BOM before the header",
            format!("\u{FEFF}{hdr}3 4 1\n1 1 5\n"),
        ),
        ("tabs between fields", format!("{hdr}3\t4\t1\n1\t1\t5\n")),
        ("NUL byte", format!("{hdr}3 4 1\n1 1 5\0\n")),
    ] {
        cases.push(("matrix", label.to_string(), with_matrix(&m)));
    }
    let mut f = tenx_seed(false);
    f[0].1 = vec![0xFF, 0xFE, 0x00, 0x41];
    cases.push(("matrix", "not UTF-8".into(), f));
    let mut f = tenx_seed(true);
    let cut = f[0].1.len() / 2;
    f[0].1.truncate(cut);
    cases.push(("gzip", "matrix.mtx.gz cut in half".into(), f));
    let mut f = tenx_seed(true);
    f[0].1 = b"not gzip at all".to_vec();
    cases.push(("gzip", "matrix.mtx.gz not gzip".into(), f));
    let mut f = tenx_seed(true);
    let n = f[0].1.len();
    f[0].1[n / 2] ^= 0x55;
    cases.push(("gzip", "matrix.mtx.gz corrupt byte".into(), f));
    for (label, feats) in [
        ("features: one column", "Gad2\nLamp5\nSst\n"),
        ("features: two names short", "E1\tGad2\n"),
        (
            "features: too many",
            "E1\tGad2\nE2\tLamp5\nE3\tSst\nE4\tVip\n",
        ),
        ("features: empty file", ""),
        (
            "features: blank lines",
            "E1\tGad2\n\n\nE2\tLamp5\nE3\tSst\n",
        ),
        ("features: duplicates", "E1\tGad2\nE2\tGad2\nE3\tgad2\n"),
        ("features: empty names", "E1\t\nE2\t\nE3\tSst\n"),
        (
            "features: spreadsheet dates",
            "E1\t2-Mar\nE2\t1-Sep\nE3\tMARCH2\n",
        ),
        ("features: CRLF", "E1\tGad2\r\nE2\tLamp5\r\nE3\tSst\r\n"),
        ("features: BOM", "\u{FEFF}E1\tGad2\nE2\tLamp5\nE3\tSst\n"),
    ] {
        let mut f = tenx_seed(false);
        f[1].1 = feats.as_bytes().to_vec();
        cases.push(("names", label.to_string(), f));
    }
    for (label, bc) in [
        ("barcodes: short", "AAAC-1\n"),
        ("barcodes: empty", ""),
        ("barcodes: duplicates", "A\nA\nA\nA\n"),
    ] {
        let mut f = tenx_seed(false);
        f[2].1 = bc.as_bytes().to_vec();
        cases.push(("names", label.to_string(), f));
    }
    for (label, drop) in [
        ("no matrix", 0usize),
        ("no features", 1),
        ("no barcodes", 2),
    ] {
        let mut f = tenx_seed(false);
        f.remove(drop);
        cases.push(("missing", label.to_string(), f));
    }
    for (label, cells) in [
        ("cells.csv: header only", "cell,cell_type,depth\n"),
        (
            "cells.csv: ragged",
            "cell,cell_type,depth\nc1\n\"c2,Oligo,2\n",
        ),
        (
            "cells.csv: unbalanced quote",
            "cell,cell_type\n\"c1,Astro\nc2,Oligo\n",
        ),
        ("cells.csv: empty", ""),
    ] {
        let mut f = loose_seed();
        f[2].1 = cells.as_bytes().to_vec();
        cases.push(("names", label.to_string(), f));
    }
    cases
}

#[test]
fn fuzz_mtx() {
    let mut h = Harness::new("10x-mtx");
    let dir = h.dir.path().to_path_buf();
    let mut seeds: Vec<(String, Files)> = Vec::new();
    for (kind, label, files) in mtx_structured() {
        write_files(&dir, &files);
        h.case(kind, &label, || read_mtx_folder(&dir, &files));
        if kind == "valid" {
            seeds.push((label, files));
        }
    }
    // read_any on a folder and on the matrix file, and the MatrixMarket parser alone.
    write_files(&dir, &seeds[0].1);
    h.case("valid", "read_any(folder)", || read_any(&dir));
    h.case("valid", "read_any(matrix.mtx)", || {
        read_any(dir.join("matrix.mtx"))
    });
    h.case("valid", "read_matrix_market", || {
        read_matrix_market(&dir.join("matrix.mtx")).map(|_| {
            Dataset::new(
                "ok",
                gimvi_data::CsrMatrix::from_dense(0, 0, &[]).unwrap(),
                vec![],
                vec![],
                vec![],
                None,
            )
            .unwrap()
        })
    });
    if let Some(files) = real_mtx_seed(60, 80) {
        write_files(&dir, &files);
        h.case("valid", "zeisel 60 genes x 80 cells", || {
            read_mtx_folder(&dir, &files)
        });
        seeds.push(("zeisel 60 x 80".into(), files));
    }
    // The whole real file, cut at a few places (gzip stream ends early).
    if let Some(root) = data_dir() {
        let z = root.join("zeisel2015_descend_subset");
        if let (Ok(m), Ok(g), Ok(c)) = (
            std::fs::read(z.join("counts.mtx.gz")),
            std::fs::read(z.join("genes.txt")),
            std::fs::read(z.join("cells.csv")),
        ) {
            for i in 0..6 {
                let cut = m.len() * (2 * i + 1) / 12;
                let files = vec![
                    ("counts.mtx.gz".to_string(), m[..cut].to_vec()),
                    ("genes.txt".to_string(), g.clone()),
                    ("cells.csv".to_string(), c.clone()),
                ];
                write_files(&dir, &files);
                h.case(
                    "truncate",
                    &format!("zeisel counts.mtx.gz at {cut}"),
                    || {
                        read_mtx(
                            &dir.join("counts.mtx.gz"),
                            &dir.join("genes.txt"),
                            &dir.join("cells.csv"),
                        )
                    },
                );
            }
        }
    }
    // Truncations of every file of every seed.
    for (label, files) in &seeds {
        for k in 0..files.len() {
            let len = files[k].1.len();
            let step = (len / 25).max(1);
            for cut in (0..len).step_by(step) {
                let mut f = files.clone();
                f[k].1.truncate(cut);
                write_files(&dir, &f);
                h.case("truncate", &format!("{label}: {} at {cut}", f[k].0), || {
                    read_mtx_folder(&dir, &f)
                });
            }
        }
    }
    let budget = random_budget(6000);
    let mut rng = Rng(base_seed() ^ 0x4D54_5800);
    for i in 0..budget {
        let (label, mut files) = seeds[rng.below(seeds.len())].clone();
        // Mostly the matrix, sometimes a names file.
        let k = if rng.chance(0.7) {
            0
        } else {
            1 + rng.below(files.len() - 1)
        };
        let gz = files[k].0.ends_with(".gz");
        let mut kinds = Vec::new();
        if gz && rng.chance(0.25) {
            let hot = Vec::new();
            kinds.push(mutate_bytes(&mut rng, &mut files[k].1, &hot));
        } else {
            let mut text = if gz {
                let mut out = Vec::new();
                let _ = std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&files[k].1[..]),
                    &mut out,
                );
                out
            } else {
                files[k].1.clone()
            };
            for _ in 0..1 + rng.below(3) {
                kinds.push(mutate_text(&mut rng, &mut text));
            }
            files[k].1 = if gz { gzip(&text) } else { text };
        }
        write_files(&dir, &files);
        let via_any = rng.chance(0.15);
        h.case(
            &format!("random {}", kinds[0]),
            &format!("#{i} {label}: {} {kinds:?}", files[k].0),
            || {
                if via_any && !files.iter().any(|f| f.0 == "counts.mtx") {
                    read_any(&dir)
                } else {
                    read_mtx_folder(&dir, &files)
                }
            },
        );
    }
    h.finish();
}

// ========================================================================= CSV / TSV

fn read_table(path: &Path, cells_as_rows: bool) -> Result<Dataset, DataError> {
    read_delimited(
        path,
        if cells_as_rows {
            Orientation::CellsAsRows
        } else {
            Orientation::GenesAsRows
        },
    )
}

fn csv_structured() -> Vec<(&'static str, String, &'static str, Vec<u8>)> {
    let mut cases: Vec<(&'static str, String, &'static str, Vec<u8>)> = Vec::new();
    let giotto = "cell_1\tcell_2\tcell_3\nGad2\t0\t5\t1\nLamp5\t2\t0\t0\nSst\t1\t1\t1\n";
    let pandas = "cell,Gad2,Lamp5\nc1,1,2\n\"c,2\",3,4\nc3,0,0\n";
    cases.push((
        "valid",
        "Giotto TSV, genes as rows".into(),
        "expr.tsv",
        giotto.into(),
    ));
    cases.push((
        "valid",
        "pandas CSV, cells as rows".into(),
        "cells.csv",
        pandas.into(),
    ));
    cases.push((
        "valid",
        "gzip CSV".into(),
        "cells.csv.gz",
        gzip(pandas.as_bytes()),
    ));
    let table: Vec<(&str, &str, String)> = vec![
        ("empty file", "e.csv", String::new()),
        ("only a newline", "e.csv", "\n".into()),
        ("only the header", "h.csv", "cell,Gad2,Lamp5\n".into()),
        (
            "only the header, no newline",
            "h.csv",
            "cell,Gad2,Lamp5".into(),
        ),
        (
            "header and blank lines",
            "h.csv",
            "cell,Gad2\n\n  \n\n".into(),
        ),
        (
            "row too short",
            "r.csv",
            "cell,Gad2,Lamp5\nc1,1,2\nc2,3\n".into(),
        ),
        (
            "row too long",
            "r.csv",
            "cell,Gad2,Lamp5\nc1,1,2\nc2,3,4,5\n".into(),
        ),
        (
            "first row too long for the header",
            "r.csv",
            "cell,Gad2\nc1,1,2,3\n".into(),
        ),
        (
            "non-numeric cell",
            "n.csv",
            "cell,Gad2,Lamp5\nc1,1,two\n".into(),
        ),
        ("empty cell", "n.csv", "cell,Gad2,Lamp5\nc1,1,\n".into()),
        ("NA and nan", "n.csv", "cell,Gad2,Lamp5\nc1,NA,nan\n".into()),
        (
            "inf and 1e40",
            "n.csv",
            "cell,Gad2,Lamp5\nc1,inf,1e40\n".into(),
        ),
        (
            "negative and fractional",
            "n.csv",
            "cell,Gad2,Lamp5\nc1,-1,0.5\n".into(),
        ),
        (
            "hex and full-width digits",
            "n.csv",
            "cell,Gad2,Lamp5\nc1,0x10,\u{FF12}\n".into(),
        ),
        ("BOM", "b.csv", "\u{FEFF}cell,Gad2,Lamp5\nc1,1,2\n".into()),
        (
            "CRLF",
            "b.csv",
            "cell,Gad2,Lamp5\r\nc1,1,2\r\nc2,3,4\r\n".into(),
        ),
        (
            "BOM and CRLF",
            "b.csv",
            "\u{FEFF}cell,Gad2,Lamp5\r\nc1,1,2\r\n".into(),
        ),
        (
            "old Mac CR only",
            "b.csv",
            "cell,Gad2,Lamp5\rc1,1,2\rc2,3,4\r".into(),
        ),
        (
            "semicolon-separated (European Excel)",
            "s.csv",
            "cell;Gad2;Lamp5\nc1;1;2\n".into(),
        ),
        ("decimal commas", "s.csv", "cell;Gad2\nc1;1,5\n".into()),
        (
            "mixed tabs and commas",
            "m.tsv",
            "cell\tGad2,Lamp5\nc1\t1,2\n".into(),
        ),
        (
            "unbalanced quote",
            "q.csv",
            "cell,Gad2\n\"c1,1\nc2,2\n".into(),
        ),
        ("quoted newline", "q.csv", "cell,Gad2\n\"c\n1\",1\n".into()),
        (
            "trailing delimiter",
            "t.csv",
            "cell,Gad2,Lamp5,\nc1,1,2,\n".into(),
        ),
        ("single column", "one.csv", "cell\nc1\nc2\n".into()),
        (
            "duplicate gene columns",
            "d.csv",
            "cell,Gad2,Gad2,GAD2\nc1,1,2,3\n".into(),
        ),
        ("empty gene name", "d.csv", "cell,,Lamp5\nc1,1,2\n".into()),
        (
            "spreadsheet dates as genes",
            "d.csv",
            "cell,2-Mar,1-Sep,MARCH2\nc1,1,2,3\n".into(),
        ),
        (
            "duplicate gene rows (genes as rows)",
            "g.tsv",
            "c1\tc2\nGad2\t1\t2\nGad2\t3\t4\n".into(),
        ),
        ("NUL bytes", "z.csv", "cell,Gad2\nc1,1\0\n".into()),
        (
            "whitespace around numbers",
            "w.csv",
            "cell,Gad2\nc1,  7  \n".into(),
        ),
    ];
    for (label, name, text) in table {
        cases.push(("table", label.into(), name, text.into_bytes()));
    }
    cases.push((
        "table",
        "not UTF-8".into(),
        "u.csv",
        b"cell,G\xFFad2\nc1,1\n".to_vec(),
    ));
    cases.push(("table", "UTF-16 with BOM".into(), "u.csv", {
        let mut v = vec![0xFF, 0xFE];
        for c in "cell,Gad2\nc1,1\n".encode_utf16() {
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }));
    let wide: String = {
        let mut s = String::from("cell");
        for j in 0..20_000 {
            s.push_str(&format!(",g{j}"));
        }
        s.push_str("\nc1");
        for j in 0..20_000 {
            s.push_str(if j % 7 == 0 { ",1" } else { ",0" });
        }
        s.push('\n');
        s
    };
    cases.push((
        "table",
        "20,000 columns".into(),
        "wide.csv",
        wide.into_bytes(),
    ));
    cases.push(("gzip", "gzip cut in half".into(), "c.csv.gz", {
        let g = gzip(pandas.as_bytes());
        g[..g.len() / 2].to_vec()
    }));
    cases.push((
        "gzip",
        "not gzip".into(),
        "c.csv.gz",
        b"cell,Gad2\nc1,1\n".to_vec(),
    ));
    cases
}

#[test]
fn fuzz_delimited() {
    let mut h = Harness::new("csv-tsv");
    let mut seeds: Vec<(String, String, Vec<u8>)> = Vec::new();
    for (kind, label, name, bytes) in csv_structured() {
        let path = h.path(name);
        write(&path, &bytes);
        for cells_as_rows in [false, true] {
            h.case(
                kind,
                &format!(
                    "{label} ({})",
                    if cells_as_rows {
                        "cells as rows"
                    } else {
                        "genes as rows"
                    }
                ),
                || read_table(&path, cells_as_rows),
            );
        }
        h.case(kind, &format!("{label} (read_any)"), || read_any(&path));
        let _ = std::fs::remove_file(&path);
        if kind == "valid" {
            seeds.push((label, name.to_string(), bytes));
        }
    }
    // Real tables: the first lines of the osmFISH expression and coordinate files.
    for (rel, lines, fields) in [
        ("osmfish_raw/osmFISH_prep_expression.txt", 12usize, 60usize),
        ("osmfish_raw/osmFISH_prep_cell_coordinates.txt", 300, 3),
    ] {
        let Some(bytes) = real_file(rel) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut piece = String::new();
        for (i, line) in text.lines().take(lines).enumerate() {
            let sep = if line.contains('\t') { '\t' } else { ' ' };
            // The expression file's header has no corner cell: one field fewer.
            let keep = if i == 0 && fields > 3 {
                fields - 1
            } else {
                fields
            };
            let f: Vec<&str> = line.split(sep).take(keep).collect();
            piece.push_str(&f.join("\t"));
            piece.push('\n');
        }
        let name = if rel.contains("expression") {
            "expr.txt"
        } else {
            "coords.tsv"
        };
        let path = h.path(name);
        write(&path, piece.as_bytes());
        h.case("valid", rel, || read_table(&path, rel.contains("coord")));
        seeds.push((rel.to_string(), name.to_string(), piece.into_bytes()));
    }
    for (label, name, bytes) in &seeds {
        let path = h.path(name);
        let step = (bytes.len() / 40).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            write(&path, &bytes[..cut]);
            h.case("truncate", &format!("{label} at {cut}"), || {
                read_table(&path, false)
            });
        }
    }
    let budget = random_budget(6000);
    let mut rng = Rng(base_seed() ^ 0x4353_5600);
    for i in 0..budget {
        let (label, name, bytes) = seeds[rng.below(seeds.len())].clone();
        let gz = name.ends_with(".gz");
        let mut text = if gz {
            let mut out = Vec::new();
            let _ =
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out);
            out
        } else {
            bytes
        };
        let mut kinds = Vec::new();
        for _ in 0..1 + rng.below(3) {
            kinds.push(mutate_text(&mut rng, &mut text));
        }
        let path = h.path(&name);
        write(&path, &if gz { gzip(&text) } else { text });
        let mode = rng.below(3);
        h.case(
            &format!("random {}", kinds[0]),
            &format!("#{i} {label} {kinds:?}"),
            || match mode {
                0 => read_table(&path, false),
                1 => read_table(&path, true),
                _ => read_any(&path),
            },
        );
    }
    h.finish();
}

// ============================================================== Zeisel 2015 text layout

fn zeisel_seed() -> String {
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
    text
}

#[test]
fn fuzz_zeisel_text() {
    let mut h = Harness::new("zeisel-text");
    let path = h.path("expression.txt");
    let seed = zeisel_seed().into_bytes();
    write(&path, &seed);
    h.case("valid", "miniature", || read_zeisel_expression(&path));
    for (label, text) in [
        ("empty", String::new()),
        (
            "header lines only",
            zeisel_seed()
                .lines()
                .take(11)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (
            "duplicate genes",
            format!("{}Gad2\t1\t1\t1\t1\n", zeisel_seed()),
        ),
        ("ragged gene line", format!("{}Sst\t1\t1\n", zeisel_seed())),
        (
            "non-numeric count",
            format!("{}Sst\t1\tx\t1\t1\n", zeisel_seed()),
        ),
    ] {
        write(&path, text.as_bytes());
        h.case("table", label, || read_zeisel_expression(&path));
    }
    for cut in 0..seed.len() {
        write(&path, &seed[..cut]);
        h.case("truncate", &format!("at {cut}"), || {
            read_zeisel_expression(&path)
        });
    }
    let mut rng = Rng(base_seed() ^ 0x5A45_4953);
    for i in 0..random_budget(2000) {
        let mut text = seed.clone();
        let mut kinds = Vec::new();
        for _ in 0..1 + rng.below(3) {
            kinds.push(mutate_text(&mut rng, &mut text));
        }
        write(&path, &text);
        h.case(
            &format!("random {}", kinds[0]),
            &format!("#{i} {kinds:?}"),
            || read_zeisel_expression(&path),
        );
    }
    h.finish();
}
