//! Thin helpers over `hdf5-pure` that turn its errors into [`DataError`]s naming the file and
//! the object being read.

use std::collections::HashMap;
use std::path::Path;

use hdf5_pure::{AttrValue, Dataset as H5Dataset, File, Group};

use crate::DataError;

/// Opens an HDF5 file, distinguishing "missing", "not HDF5" and "corrupt".
pub(crate) fn open(path: &Path) -> Result<File, DataError> {
    if !path.exists() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let is_hdf5 = hdf5_pure::is_hdf5(path).map_err(crate::io_err(path))?;
    if !is_hdf5 {
        return Err(DataError::NotHdf5 {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|e| DataError::Hdf5 {
        path: path.to_path_buf(),
        what: "the file structure".into(),
        message: e.to_string(),
    })?;
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
    Ok(file)
}

pub(crate) fn h5_err(path: &Path, what: &str) -> impl FnOnce(hdf5_pure::Error) -> DataError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |e| DataError::Hdf5 {
        path,
        what,
        message: e.to_string(),
    }
}

/// Whether `name` is a dataset / a group in `g`.
pub(crate) fn has_dataset(g: &Group, name: &str) -> bool {
    g.datasets()
        .map(|d| d.iter().any(|n| n == name))
        .unwrap_or(false)
}

pub(crate) fn has_group(g: &Group, name: &str) -> bool {
    g.groups()
        .map(|d| d.iter().any(|n| n == name))
        .unwrap_or(false)
}

/// Resolves a slash-separated path to a group, `None` if any part is absent.
pub(crate) fn group_at(file: &File, path: &str) -> Option<Group> {
    let mut g = file.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !has_group(&g, part) {
            return None;
        }
        g = g.group(part).ok()?;
    }
    Some(g)
}

/// Attribute map of a group or dataset, empty when unreadable.
pub(crate) fn attrs_of_group(g: &Group) -> HashMap<String, AttrValue> {
    g.attrs().unwrap_or_default()
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

/// An integer-array attribute (e.g. a sparse matrix's `shape`).
pub(crate) fn attr_ints(attrs: &HashMap<String, AttrValue>, key: &str) -> Option<Vec<i64>> {
    Some(match attrs.get(key)? {
        AttrValue::I64Array(v) => v.clone(),
        AttrValue::I32Array(v) => v.iter().map(|&x| x as i64).collect(),
        AttrValue::U64Array(v) => v.iter().map(|&x| x as i64).collect(),
        AttrValue::U32Array(v) => v.iter().map(|&x| x as i64).collect(),
        AttrValue::F64Array(v) => v.iter().map(|&x| x as i64).collect(),
        _ => return None,
    })
}

/// Whether a dataset holds strings.
pub(crate) fn is_string_dataset(d: &H5Dataset) -> bool {
    matches!(
        d.dtype(),
        Ok(hdf5_pure::DType::String) | Ok(hdf5_pure::DType::VariableLengthString)
    )
}

pub(crate) fn read_f64(path: &Path, d: &H5Dataset, what: &str) -> Result<Vec<f64>, DataError> {
    d.read_f64().map_err(h5_err(path, what))
}

pub(crate) fn read_i64(path: &Path, d: &H5Dataset, what: &str) -> Result<Vec<i64>, DataError> {
    d.read_i64().map_err(h5_err(path, what))
}

pub(crate) fn read_strings(
    path: &Path,
    d: &H5Dataset,
    what: &str,
) -> Result<Vec<String>, DataError> {
    d.read_string()
        .map(|v| {
            v.into_iter()
                .map(|s| s.trim_end_matches('\0').to_string())
                .collect()
        })
        .map_err(h5_err(path, what))
}

pub(crate) fn shape(path: &Path, d: &H5Dataset, what: &str) -> Result<Vec<usize>, DataError> {
    Ok(d.shape()
        .map_err(h5_err(path, what))?
        .into_iter()
        .map(|x| x as usize)
        .collect())
}

/// Converts f64 matrix values to f32, refusing values f32 cannot hold.
pub(crate) fn to_f32(path: &Path, what: &str, v: Vec<f64>) -> Result<Vec<f32>, DataError> {
    if let Some(bad) = v
        .iter()
        .find(|x| x.is_finite() && x.abs() > f32::MAX as f64)
    {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("{what}: value {bad} does not fit in 32-bit floating point"),
        });
    }
    Ok(v.into_iter().map(|x| x as f32).collect())
}
