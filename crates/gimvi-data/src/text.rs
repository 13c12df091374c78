//! Text helpers shared by the MatrixMarket, delimited-table and registry readers: opening a
//! possibly gzipped text file and splitting a line into fields.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::{io_err, DataError};

/// Rows and entries reserved up front at most, whatever a header declares: the rest grows
/// with what the file really holds.
pub(crate) const MAX_RESERVE: usize = 1 << 20;

/// The byte-order mark some spreadsheets put at the start of a UTF-8 file.
pub(crate) const BOM: char = '\u{FEFF}';

/// Turns an error met while reading line `line` (1-based) of a text file into a
/// [`DataError`]: text that is not UTF-8, and a gzip stream that is corrupt or cut short, are
/// format errors saying so; anything else is an I/O error.
pub(crate) fn line_err(path: &Path, line: usize) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |e| {
        let gz = path
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("gz"));
        let message = match e.kind() {
            std::io::ErrorKind::InvalidData if e.to_string().contains("UTF-8") => format!(
                "line {line}: not UTF-8 text (a binary file, or text saved as UTF-16 / Latin-1?)"
            ),
            std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::UnexpectedEof
                if gz =>
            {
                format!("line {line}: the gzip stream is corrupt or cut short ({e})")
            }
            _ => return io_err(path)(e),
        };
        DataError::Format {
            path: path.to_path_buf(),
            message,
        }
    }
}

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
