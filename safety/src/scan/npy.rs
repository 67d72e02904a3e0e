//! NumPy `.npy`: the header literal, the data length, object arrays.

use super::pickle::{latin1, report_pickles, walk_stream};
use super::*;

/// Largest `.npy` header accepted.
pub(super) const MAX_NPY_HEADER: u64 = 1024 * 1024;

pub(super) struct NpyHeader {
    version: (u8, u8),
    descr: String,
    object: bool,
    itemsize: Option<u64>,
    shape: Vec<u64>,
    data_start: usize,
}

pub(super) fn scan_npy(blob: &dyn Blob, entry: Option<&str>, r: &mut Builder) -> io::Result<()> {
    if entry.is_none() {
        r.format = Format::Npy;
        r.summary = "NumPy .npy".into();
    }
    let parsed = with_prefix(blob, |buf, eof, total| {
        let header = parse_npy(buf, eof, total)?;
        let stream = if header.object && (header.data_start as u64) < total {
            Some(walk_stream(buf, header.data_start, eof, total)?)
        } else {
            None
        };
        Ok((header, stream))
    })?;
    let (header, stream) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            r.add(Rule::NpyInvalid, prefixed(entry, &message), None, entry);
            return Ok(());
        }
    };
    let shape: Vec<String> = header.shape.iter().map(u64::to_string).collect();
    if entry.is_none() {
        r.summary = format!(
            "NumPy .npy v{}.{}, {} ({})",
            header.version.0,
            header.version.1,
            header.descr,
            shape.join(", ")
        );
    }
    if header.object {
        r.add(
            Rule::NpyObjectDtype,
            prefixed(
                entry,
                &format!(
                    "object dtype {}: the data is a pickle that np.load(allow_pickle=True) runs",
                    header.descr
                ),
            ),
            None,
            entry,
        );
        if let Some(stream) = stream {
            report_pickles(&stream, entry, r);
        }
        return Ok(());
    }
    let data_len = blob.size().saturating_sub(header.data_start as u64);
    let expected = header.itemsize.and_then(|size| {
        header
            .shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
    });
    match (header.itemsize, expected) {
        (Some(_), None) => r.add(
            Rule::NpyInvalid,
            prefixed(entry, "the shape's byte size overflows 64 bits"),
            None,
            entry,
        ),
        (Some(_), Some(expected)) if expected != data_len => r.add(
            Rule::NpyInvalid,
            prefixed(
                entry,
                &format!(
                    "dtype {} and shape ({}) need {expected} data bytes, the file holds {data_len}",
                    header.descr,
                    shape.join(", ")
                ),
            ),
            None,
            entry,
        ),
        _ => {}
    }
    Ok(())
}

pub(super) fn parse_npy(buf: &[u8], eof: Eof, total: u64) -> Result<NpyHeader, Stop> {
    let mut c = Cursor::new(buf, 0, eof, total);
    if c.take(6, "magic")? != b"\x93NUMPY" {
        return bad("not a .npy file (bad magic)");
    }
    let major = c.u8("major version")?;
    let minor = c.u8("minor version")?;
    let header_len = match (major, minor) {
        (1, 0) => u64::from(c.u16("header length")?),
        (2 | 3, 0) => u64::from(c.u32("header length")?),
        _ => return bad(format!("unsupported .npy version {major}.{minor}")),
    };
    if header_len > MAX_NPY_HEADER {
        return bad(format!(
            "header of {header_len} bytes is above the limit of {MAX_NPY_HEADER}"
        ));
    }
    let raw = c.take(header_len, "header")?;
    let text: String = if major == 3 {
        match std::str::from_utf8(raw) {
            Ok(s) => s.to_string(),
            Err(_) => return bad("version 3.0 header is not UTF-8"),
        }
    } else {
        latin1(raw)
    };
    let dict = match parse_literal(&text) {
        Ok(Lit::Dict(items)) => items,
        Ok(_) => return bad("header is not a dict"),
        Err(message) => return bad(format!("header is not a Python literal: {message}")),
    };
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in dict {
        let Lit::Str(key) = key else {
            return bad("header has a key that is not a string");
        };
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            other => return bad(format!("header has the unexpected key {other:?}")),
        };
        if slot.replace(value).is_some() {
            return bad(format!("header repeats the key {key:?}"));
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return bad("header must hold exactly descr, fortran_order and shape");
    };
    if !matches!(fortran, Lit::Bool(_)) {
        return bad("fortran_order is not a bool");
    }
    let Lit::Tuple(dims) = shape else {
        return bad("shape is not a tuple");
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Lit::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| Stop::Bad("shape holds something other than non-negative ints".into()))?;
    let dtype = dtype_of(&descr, 0).map_err(Stop::Bad)?;
    Ok(NpyHeader {
        version: (major, minor),
        descr: literal_text(&descr),
        object: dtype.object,
        itemsize: dtype.itemsize,
        shape,
        data_start: c.pos,
    })
}

pub(super) struct Dtype {
    object: bool,
    itemsize: Option<u64>,
}

/// A `descr`: a type string, a structured list of `(name, descr[, shape])`, or `(descr, shape)`.
pub(super) fn dtype_of(descr: &Lit, depth: u32) -> Result<Dtype, String> {
    if depth > 16 {
        return Err("descr nests too deeply".into());
    }
    match descr {
        Lit::Str(s) => typestr(s),
        Lit::Tuple(parts) => match parts.as_slice() {
            [inner, shape] => {
                let inner = dtype_of(inner, depth + 1)?;
                Ok(Dtype {
                    object: inner.object,
                    itemsize: inner.itemsize.and_then(|s| scale(s, shape)),
                })
            }
            _ => Err("descr tuple is not (dtype, shape)".into()),
        },
        Lit::List(fields) => {
            let mut object = false;
            let mut itemsize = Some(0u64);
            for field in fields {
                let Lit::Tuple(parts) = field else {
                    return Err("structured descr field is not a tuple".into());
                };
                let (name, inner, shape) = match parts.as_slice() {
                    [name, inner] => (name, inner, None),
                    [name, inner, shape] => (name, inner, Some(shape)),
                    _ => return Err("structured descr field is not (name, dtype[, shape])".into()),
                };
                if !matches!(name, Lit::Str(_) | Lit::Tuple(_)) {
                    return Err("structured descr field name is not a string".into());
                }
                let inner = dtype_of(inner, depth + 1)?;
                object |= inner.object;
                let size = match shape {
                    Some(shape) => inner.itemsize.and_then(|s| scale(s, shape)),
                    None => inner.itemsize,
                };
                itemsize = itemsize.zip(size).and_then(|(a, b)| a.checked_add(b));
            }
            Ok(Dtype { object, itemsize })
        }
        _ => Err("descr is neither a type string nor a structured list".into()),
    }
}

pub(super) fn scale(size: u64, shape: &Lit) -> Option<u64> {
    match shape {
        Lit::Int(n) => size.checked_mul(u64::try_from(*n).ok()?),
        Lit::Tuple(dims) => dims.iter().try_fold(size, |acc, d| match d {
            Lit::Int(n) => acc.checked_mul(u64::try_from(*n).ok()?),
            _ => None,
        }),
        _ => None,
    }
}

/// A NumPy type string: `[<>|=]` kind digits `[unit]`, or a one-letter code. Any `O` is object.
pub(super) fn typestr(s: &str) -> Result<Dtype, String> {
    let body = s.strip_prefix(['<', '>', '|', '=']).unwrap_or(s);
    let (body, unit) = match body.split_once('[') {
        Some((b, rest)) => (b, Some(rest)),
        None => (body, None),
    };
    let mut chars = body.chars();
    let kind = chars
        .next()
        .ok_or_else(|| format!("descr {s:?} is empty"))?;
    let digits = chars.as_str();
    let unit_ok = unit.is_none_or(|u| {
        u.strip_suffix(']')
            .is_some_and(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_alphanumeric()))
    });
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 12 || !unit_ok {
        return Err(format!("descr {s:?} is not a NumPy type string"));
    }
    let n: Option<u64> = if digits.is_empty() {
        None
    } else {
        digits.parse().ok()
    };
    let itemsize = match (kind, n) {
        ('O', None) => Some(8),
        ('U', Some(n)) => n.checked_mul(4),
        ('b' | 'i' | 'u' | 'f' | 'c' | 'm' | 'M' | 'S' | 'a' | 'V' | 'O', Some(n)) => Some(n),
        ('?' | 'b' | 'B' | 'c', None) => Some(1),
        ('h' | 'H' | 'e', None) => Some(2),
        ('i' | 'I' | 'f', None) => Some(4),
        ('l' | 'L' | 'q' | 'Q' | 'p' | 'P' | 'd' | 'F', None) => Some(8),
        ('g' | 'D', None) => Some(16),
        ('G', None) => Some(32),
        ('S' | 'a' | 'U' | 'V' | 'm' | 'M', None) => None,
        _ => return Err(format!("descr {s:?} is not a NumPy type string")),
    };
    Ok(Dtype {
        object: s.contains('O'),
        itemsize,
    })
}

/// A Python literal of a `.npy` header.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

pub(super) fn literal_text(lit: &Lit) -> String {
    match lit {
        Lit::Str(s) => format!("'{s}'"),
        Lit::Int(n) => n.to_string(),
        Lit::Bool(b) => if *b { "True" } else { "False" }.into(),
        Lit::None => "None".into(),
        Lit::Tuple(items) => format!(
            "({})",
            items
                .iter()
                .map(literal_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Lit::List(items) => format!(
            "[{}]",
            items
                .iter()
                .map(literal_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Lit::Dict(_) => "{...}".into(),
    }
}

pub(super) fn parse_literal(text: &str) -> Result<Lit, String> {
    let mut p = LitParser {
        s: text.as_bytes(),
        pos: 0,
    };
    let value = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(format!("unexpected text at offset {}", p.pos));
    }
    Ok(value)
}

pub(super) struct LitParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl LitParser<'_> {
    fn ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn value(&mut self, depth: u32) -> Result<Lit, String> {
        if depth > 32 {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Lit::Dict(items));
                    }
                    let key = self.value(depth + 1)?;
                    if self.peek() != Some(b':') {
                        return Err(format!("expected ':' at offset {}", self.pos));
                    }
                    self.pos += 1;
                    let value = self.value(depth + 1)?;
                    items.push((key, value));
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err(format!("expected ',' or '}}' at offset {}", self.pos)),
                    }
                }
            }
            Some(open @ (b'(' | b'[')) => {
                self.pos += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                let mut comma = false;
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            comma = true;
                        }
                        Some(c) if c == close => {}
                        _ => return Err(format!("expected ',' at offset {}", self.pos)),
                    }
                }
                if open == b'[' {
                    Ok(Lit::List(items))
                } else if items.len() == 1 && !comma {
                    // `(x)` is x, not a tuple.
                    Ok(items.pop().unwrap_or(Lit::None))
                } else {
                    Ok(Lit::Tuple(items))
                }
            }
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(b'u' | b'b') if matches!(self.s.get(self.pos + 1), Some(b'\'' | b'"')) => {
                self.pos += 1;
                let q = self.s.get(self.pos).copied().unwrap_or(b'\'');
                self.string(q)
            }
            Some(b'-' | b'+' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos += 1;
                while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(self.s.get(start..self.pos).unwrap_or_default())
                    .unwrap_or_default();
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                digits
                    .parse::<i128>()
                    .map(Lit::Int)
                    .map_err(|_| format!("bad integer {digits:?}"))
            }
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'_') => {
                let start = self.pos;
                while self
                    .s
                    .get(self.pos)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    self.pos += 1;
                }
                match self.s.get(start..self.pos).unwrap_or_default() {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    other => Err(format!(
                        "unexpected name {:?}",
                        String::from_utf8_lossy(other)
                    )),
                }
            }
            Some(other) => Err(format!(
                "unexpected character {:?} at offset {}",
                char::from(other),
                self.pos
            )),
            None => Err("unexpected end".into()),
        }
    }

    fn string(&mut self, quote: u8) -> Result<Lit, String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.pos).copied() {
                None => return Err("unterminated string".into()),
                Some(b) if b == quote => {
                    self.pos += 1;
                    return Ok(Lit::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => {
                    let next = self
                        .s
                        .get(self.pos + 1)
                        .copied()
                        .ok_or("unterminated string")?;
                    out.push(next);
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_parser() {
        let lit = parse_literal("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }  \n");
        assert!(
            matches!(lit, Ok(Lit::Dict(ref items)) if items.len() == 3),
            "{lit:?}"
        );
        assert_eq!(parse_literal("(3,)"), Ok(Lit::Tuple(vec![Lit::Int(3)])));
        assert_eq!(
            parse_literal("(3L, 4L)"),
            Ok(Lit::Tuple(vec![Lit::Int(3), Lit::Int(4)]))
        );
        assert_eq!(parse_literal("()"), Ok(Lit::Tuple(vec![])));
        assert!(parse_literal("{'a': __import__('os')}").is_err());
    }
}
