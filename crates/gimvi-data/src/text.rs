//! Text helpers shared by the MatrixMarket, delimited-table and registry readers: opening a
//! possibly gzipped text file and splitting a line into fields.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::{io_err, DataError};

/// Opens a text file, decompressing it when its name ends in `.gz`.
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead>, DataError> {
    let f = File::open(path).map_err(io_err(path))?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let inner: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, inner)))
}

/// Splits one line on `delim`, honouring double quotes (RFC 4180: `""` inside quotes is a
/// quote).
pub fn split_line(line: &str, delim: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            c if c == delim && !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}
