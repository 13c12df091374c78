//! Thin helpers over `hdf5-pure` that turn its errors into [`DataError`]s naming the file and
//! the object being read, and that refuse, before anything is read, a dataset whose declared
//! size the file cannot hold (see [`H5::checked_shape`]).
//!
//! Every call into `hdf5-pure` made by the h5ad and loom readers goes through this module and
//! runs under [`contain`]: a panic inside `hdf5-pure` on a corrupt file becomes a
//! [`DataError::Hdf5`] instead of unwinding into the caller.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, Dataset as H5Dataset, File, Group, Layout, VlenStringReadOptions};

use crate::DataError;

/// The `hdf5-pure` version this crate is built and fuzzed against (named in the message of a
/// contained panic).
pub(crate) const HDF5_PURE_VERSION: &str = "0.47.0";

/// The largest expansion a deflate stream can achieve (zlib's documented limit is 1032:1);
/// a compressed dataset whose chunks cannot be enumerated may declare at most this many times
/// the file's size.
pub(crate) const MAX_COMPRESSION_RATIO: u64 = 1032;

/// Dimensions up to this length are accepted without a storage argument (an empty matrix
/// of 0 × 40,000 genes stores nothing but is legitimate).
const SMALL_DIMENSION: u64 = 1 << 16;

/// Runs one call into `hdf5-pure`, turning a panic into [`DataError::Hdf5`] (the crate is
/// fuzzed, but a corrupt file could still reach an unchecked path; see docs/reliability.md).
pub(crate) fn contain<T>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> Result<T, hdf5_pure::Error>,
) -> Result<T, DataError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(h5_err(path, what)),
        Err(payload) => {
            let cause = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(DataError::Hdf5 {
                path: path.to_path_buf(),
                what: what.to_string(),
                message: format!(
                    "the HDF5 reader (hdf5-pure {HDF5_PURE_VERSION}) panicked on this file \
                     ({cause}); the file is probably corrupt"
                ),
            })
        }
    }
}

fn h5_err(path: &Path, what: &str) -> impl FnOnce(hdf5_pure::Error) -> DataError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |e| DataError::Hdf5 {
        path,
        what,
        message: e.to_string(),
    }
}

/// An open HDF5 file with its path and size on disk.
pub(crate) struct H5 {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    /// Bytes on disk: the upper bound for what uncompressed storage can hold.
    len: u64,
}

/// Opens an HDF5 file, distinguishing "missing", "not HDF5" and "corrupt".
pub(crate) fn open(path: &Path) -> Result<H5, DataError> {
    if !path.exists() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    if path.is_dir() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not an HDF5 file",
            ),
        });
    }
    let is_hdf5 = hdf5_pure::is_hdf5(path).map_err(crate::io_err(path))?;
    if !is_hdf5 {
        return Err(DataError::NotHdf5 {
            path: path.to_path_buf(),
        });
    }
    let file = contain(path, "the file structure", || File::open(path))?;
    // A file cut short (interrupted download or copy) can still parse when the lost tail holds
    // nothing the reader visits first; the superblock records where the file should end.
    let sb = file.superblock();
    let expected = sb.eof_address.saturating_add(sb.base_address.get());
    let actual = std::fs::metadata(path).map_err(crate::io_err(path))?.len();
    if actual < expected {
        return Err(DataError::Hdf5 {
            path: path.to_path_buf(),
            what: "the file".into(),
            message: format!(
                "truncated: {actual} bytes on disk, the HDF5 superblock says {expected}"
            ),
        });
    }
    Ok(H5 {
        file,
        path: path.to_path_buf(),
        len: actual,
    })
}

impl H5 {
    fn format_err(&self, message: String) -> DataError {
        DataError::Format {
            path: self.path.clone(),
            message,
        }
    }

    /// The root group.
    pub(crate) fn root(&self) -> Result<Group, DataError> {
        contain(&self.path, "the root group", || Ok(self.file.root()))
    }

    /// Resolves a slash-separated path to a group, `None` if any part is absent.
    pub(crate) fn group_at(&self, loc: &str) -> Result<Option<Group>, DataError> {
        let mut g = self.root()?;
        for part in loc.split('/').filter(|p| !p.is_empty()) {
            if !self.has_group(&g, part)? {
                return Ok(None);
            }
            g = contain(&self.path, loc, || g.group(part))?;
        }
        Ok(Some(g))
    }

    /// The dataset `name` of group `g` (`what` names it in messages).
    pub(crate) fn dataset(
        &self,
        g: &Group,
        name: &str,
        what: &str,
    ) -> Result<H5Dataset, DataError> {
        contain(&self.path, what, || g.dataset(name))
    }

    /// The subgroup `name` of group `g`.
    pub(crate) fn group(&self, g: &Group, name: &str, what: &str) -> Result<Group, DataError> {
        contain(&self.path, what, || g.group(name))
    }

    /// Names of the datasets of `g` (empty when unreadable).
    pub(crate) fn dataset_names(&self, g: &Group) -> Vec<String> {
        contain(&self.path, "a group's members", || g.datasets()).unwrap_or_default()
    }

    /// Names of the subgroups of `g` (empty when unreadable).
    pub(crate) fn group_names(&self, g: &Group) -> Vec<String> {
        contain(&self.path, "a group's members", || g.groups()).unwrap_or_default()
    }

    /// Whether `name` is a dataset in `g`.
    pub(crate) fn has_dataset(&self, g: &Group, name: &str) -> Result<bool, DataError> {
        Ok(self.dataset_names(g).iter().any(|n| n == name))
    }

    /// Whether `name` is a group in `g`.
    pub(crate) fn has_group(&self, g: &Group, name: &str) -> Result<bool, DataError> {
        Ok(self.group_names(g).iter().any(|n| n == name))
    }

    /// Attribute map of a group, empty when unreadable.
    pub(crate) fn attrs_of_group(&self, g: &Group) -> HashMap<String, AttrValue> {
        contain(&self.path, "attributes", || g.attrs()).unwrap_or_default()
    }

    /// Whether a dataset holds strings.
    pub(crate) fn is_string_dataset(&self, d: &H5Dataset) -> bool {
        matches!(
            contain(&self.path, "a datatype", || d.dtype()),
            Ok(hdf5_pure::DType::String) | Ok(hdf5_pure::DType::VariableLengthString)
        )
    }

    /// The dataset's shape, after checking that the file can hold what it declares: the
    /// element count (checked product of the dimensions) times the element size must not
    /// exceed what the dataset's storage can supply — the file's size for uncompressed data,
    /// the chunks actually stored for chunked data (or the file's size ×
    /// [`MAX_COMPRESSION_RATIO`] when the chunk index cannot be listed) — and no dimension
    /// longer than 65,536 may exceed that byte count either (a 10¹² × 0 matrix stores nothing
    /// but would make the reader allocate per row). Nothing is read or allocated for a
    /// dataset that fails the check.
    pub(crate) fn checked_shape(&self, d: &H5Dataset, what: &str) -> Result<Vec<usize>, DataError> {
        let shape = contain(&self.path, what, || d.shape())?;
        let elem = contain(&self.path, what, || d.element_size())?;
        let dims = shape
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" × ");
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, &x| acc.checked_mul(x))
            .ok_or_else(|| {
                self.format_err(format!(
                    "'{what}' declares {dims} elements: more than 2^64, the file is corrupt"
                ))
            })?;
        let bytes = elements.checked_mul(elem).ok_or_else(|| {
            self.format_err(format!(
                "'{what}' declares {dims} elements of {elem} bytes: more than 2^64 bytes, the \
                 file is corrupt"
            ))
        })?;
        let capacity = self.storage_capacity(d, what, elem)?;
        if bytes > capacity.0 {
            return Err(self.format_err(format!(
                "'{what}' declares {dims} elements ({bytes} bytes) but {} can hold at most {} \
                 bytes for it; the file is corrupt or was not written completely",
                capacity.1, capacity.0
            )));
        }
        if let Some(&d) = shape
            .iter()
            .find(|&&x| x > SMALL_DIMENSION && x > capacity.0)
        {
            return Err(self.format_err(format!(
                "'{what}' declares a dimension of {d} ({dims}) but {} can hold at most {} bytes \
                 for it; the file is corrupt",
                capacity.1, capacity.0
            )));
        }
        shape
            .into_iter()
            .map(|x| {
                usize::try_from(x).map_err(|_| {
                    self.format_err(format!("'{what}' has a dimension ({x}) too large here"))
                })
            })
            .collect()
    }

    /// The most bytes the storage of `d` can supply, with a phrase saying where that bound
    /// comes from.
    fn storage_capacity(
        &self,
        d: &H5Dataset,
        what: &str,
        elem: u64,
    ) -> Result<(u64, String), DataError> {
        let file = format!("the file ({} bytes)", self.len);
        let past_end = |address: u64, size: u64| {
            self.format_err(format!(
                "'{what}': {size} bytes of data at offset {address} run past the end of the file \
                 ({} bytes); the file is corrupt or truncated",
                self.len
            ))
        };
        Ok(match contain(&self.path, what, || d.layout())? {
            Layout::Chunked { chunk_shape, .. } => {
                let per_chunk = chunk_shape
                    .iter()
                    .try_fold(elem, |acc, &x| acc.checked_mul(x))
                    .unwrap_or(u64::MAX);
                match contain(&self.path, what, || d.chunks()) {
                    Ok(chunks) => {
                        // hdf5-pure 0.47 reserves a chunk's recorded size before it checks that
                        // the chunk lies inside the file: check here first.
                        if let Some(c) = chunks.iter().find(|c| {
                            c.address
                                .checked_add(c.storage_size)
                                .is_none_or(|end| end > self.len)
                        }) {
                            return Err(past_end(c.address, c.storage_size));
                        }
                        (
                            (chunks.len() as u64).saturating_mul(per_chunk),
                            format!("its {} stored chunk(s)", chunks.len()),
                        )
                    }
                    Err(_) if !d.filters().is_empty() => (
                        self.len.saturating_mul(MAX_COMPRESSION_RATIO),
                        format!("{file} compressed at most {MAX_COMPRESSION_RATIO}:1"),
                    ),
                    Err(_) => (self.len, file),
                }
            }
            Layout::Contiguous {
                address: Some(address),
                size,
            } if address.checked_add(size).is_none_or(|end| end > self.len) => {
                return Err(past_end(address, size));
            }
            _ => (self.len, file),
        })
    }

    /// All values as f64, after [`checked_shape`](Self::checked_shape); an error unless as
    /// many values come back as the shape declares.
    pub(crate) fn read_f64(&self, d: &H5Dataset, what: &str) -> Result<Vec<f64>, DataError> {
        let n: usize = self.checked_shape(d, what)?.iter().product();
        let v = contain(&self.path, what, || d.read_f64())?;
        self.check_count(d, what, n, v.len())?;
        Ok(v)
    }

    /// All values as i64, after [`checked_shape`](Self::checked_shape); an error unless as
    /// many values come back as the shape declares.
    pub(crate) fn read_i64(&self, d: &H5Dataset, what: &str) -> Result<Vec<i64>, DataError> {
        let n: usize = self.checked_shape(d, what)?.iter().product();
        let v = contain(&self.path, what, || d.read_i64())?;
        self.check_count(d, what, n, v.len())?;
        Ok(v)
    }

    /// `hdf5-pure` 0.47 returns no values, without an error, for element types it cannot
    /// convert (e.g. IEEE half floats): refuse that instead of reading an empty array.
    pub(crate) fn check_count(
        &self,
        d: &H5Dataset,
        what: &str,
        expected: usize,
        found: usize,
    ) -> Result<(), DataError> {
        if expected == found {
            return Ok(());
        }
        Err(self.format_err(format!(
            "'{what}': {found} values came back for {expected} declared; its element type ({}) \
             is not one this reader can convert to numbers",
            self.describe_type(d)
        )))
    }

    /// The element type of `d` in words, for messages.
    pub(crate) fn describe_type(&self, d: &H5Dataset) -> String {
        match contain(&self.path, "a datatype", || d.datatype()) {
            Ok(hdf5_pure::Datatype::FloatingPoint { size, .. }) => {
                format!("{}-bit floating point", size * 8)
            }
            Ok(hdf5_pure::Datatype::FixedPoint { size, .. }) => format!("{}-bit integer", size * 8),
            Ok(other) => format!("{other:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("unknown")
                .to_string(),
            Err(_) => "unreadable".into(),
        }
    }

    /// Rows `start..start + count` of a 2-D dataset as f64 (the caller has checked the shape).
    pub(crate) fn read_f64_rows(
        &self,
        d: &H5Dataset,
        what: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<f64>, DataError> {
        contain(&self.path, what, || {
            d.read_f64_rows(start as u64, count as u64)
        })
    }

    /// All strings (fixed or variable length; trailing NULs removed), after
    /// [`checked_shape`](Self::checked_shape); variable-length payloads are limited to the
    /// file's size.
    pub(crate) fn read_strings(&self, d: &H5Dataset, what: &str) -> Result<Vec<String>, DataError> {
        let shape = self.checked_shape(d, what)?;
        let n: usize = shape.iter().product();
        let vlen = matches!(
            contain(&self.path, what, || d.dtype()),
            Ok(hdf5_pure::DType::VariableLengthString)
        );
        let strings = if vlen {
            let limits = VlenStringReadOptions::new()
                .with_max_elements(n)
                .with_max_payload_bytes(usize::try_from(self.len).unwrap_or(usize::MAX));
            contain(&self.path, what, || d.read_vlen_strings(limits))?
        } else {
            contain(&self.path, what, || d.read_string())?
        };
        Ok(strings
            .into_iter()
            .map(|s| s.trim_end_matches('\0').to_string())
            .collect())
    }
}

/// A string-valued attribute, whatever its string encoding.
pub(crate) fn attr_string(attrs: &HashMap<String, AttrValue>, key: &str) -> Option<String> {
    match attrs.get(key)? {
        AttrValue::VarLenString(s) | AttrValue::String(s) | AttrValue::AsciiString(s) => {
            Some(s.clone())
        }
        AttrValue::VarLenStringArray(v) | AttrValue::AsciiStringArray(v) if v.len() == 1 => {
            Some(v[0].clone())
        }
        _ => None,
    }
}

/// A string-array attribute (an empty numeric array, as h5py writes an empty list, is empty).
pub(crate) fn attr_strings(attrs: &HashMap<String, AttrValue>, key: &str) -> Option<Vec<String>> {
    match attrs.get(key)? {
        AttrValue::VarLenStringArray(v) | AttrValue::AsciiStringArray(v) => Some(v.clone()),
        AttrValue::VarLenString(s) | AttrValue::String(s) | AttrValue::AsciiString(s) => {
            Some(vec![s.clone()])
        }
        AttrValue::F64Array(v) if v.is_empty() => Some(Vec::new()),
        _ => None,
    }
}

/// A non-negative integer-array attribute (e.g. a sparse matrix's `shape`); `None` when the
/// attribute is absent, not an integer array, or holds a negative or non-integral value.
pub(crate) fn attr_sizes(attrs: &HashMap<String, AttrValue>, key: &str) -> Option<Vec<u64>> {
    let v: Vec<Option<u64>> = match attrs.get(key)? {
        AttrValue::I64Array(v) => v.iter().map(|&x| u64::try_from(x).ok()).collect(),
        AttrValue::I32Array(v) => v.iter().map(|&x| u64::try_from(x).ok()).collect(),
        AttrValue::U64Array(v) => v.iter().map(|&x| Some(x)).collect(),
        AttrValue::U32Array(v) => v.iter().map(|&x| Some(u64::from(x))).collect(),
        AttrValue::F64Array(v) => v
            .iter()
            .map(|&x| (x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(63)).then_some(x as u64))
            .collect(),
        _ => return None,
    };
    v.into_iter().collect()
}

/// Converts f64 matrix values to f32, refusing values f32 cannot hold.
pub(crate) fn to_f32(path: &Path, what: &str, v: Vec<f64>) -> Result<Vec<f32>, DataError> {
    if let Some(bad) = v
        .iter()
        .find(|x| x.is_finite() && x.abs() > f32::MAX as f64)
    {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("'{what}': value {bad:e} does not fit in 32-bit floating point"),
        });
    }
    Ok(v.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside a call into hdf5-pure becomes a typed error naming the file, the object
    /// and the crate version.
    #[test]
    fn a_panic_in_the_hdf5_layer_is_contained() {
        let path = Path::new("/data/broken.h5ad");
        let err = contain::<()>(path, "X/indptr", || panic!("index out of bounds")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Hdf5 { .. }), "{msg}");
        for part in [
            "/data/broken.h5ad",
            "X/indptr",
            "hdf5-pure 0.47.0",
            "index out of bounds",
        ] {
            assert!(msg.contains(part), "{part} not in {msg}");
        }
    }
}
