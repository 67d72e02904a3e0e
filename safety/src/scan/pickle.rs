//! The pickle walk: a symbolic stack machine modelled on CPython's unpickler.

use super::*;

/// A stack item: what the walk needs to know about a value.
#[derive(Clone)]
pub(super) enum Item {
    Other,
    Str(Rc<str>),
    Global,
}

/// One import a pickle makes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Imported {
    Named {
        module: String,
        name: String,
    },
    /// `STACK_GLOBAL` on operands that are not strings the walk could follow.
    Unresolved,
    /// `EXT1/2/4`: a code of copyreg's extension registry.
    Extension(i64),
}

impl Imported {
    pub(super) fn display(&self) -> String {
        match self {
            Imported::Named { module, name } => format!("{module}.{name}"),
            Imported::Unresolved => "<STACK_GLOBAL of computed operands>".into(),
            Imported::Extension(code) => format!("<copyreg extension {code}>"),
        }
    }

    /// A named import of the deny-list, with names that are Python identifiers.
    fn dangerous(&self) -> bool {
        match self {
            Imported::Named { module, name } => {
                dotted_identifier(module)
                    && dotted_identifier(name)
                    && classify(module, name) == Class::Dangerous
            }
            _ => false,
        }
    }
}

/// The result of walking one pickle.
pub(super) struct PickleWalk {
    pub(super) start: usize,
    /// Distinct imports in order, at most [`MAX_IMPORTS`].
    pub(super) imports: Vec<Imported>,
    /// Imports beyond [`MAX_IMPORTS`] distinct ones, not recorded.
    pub(super) omitted: u64,
    pub(super) protocol: Option<u8>,
    pub(super) binary: bool,
    /// A call opcode (`REDUCE`, `BUILD`, `OBJ`, `INST`, `NEWOBJ`, `NEWOBJ_EX`) ran after an import.
    pub(super) called: bool,
    /// The offset after `STOP`.
    pub(super) end: Option<usize>,
    /// Where and why the walk failed.
    pub(super) error: Option<(usize, String)>,
    /// Where and how the stream breaks the `FRAME` rules of CPython's Python unpickler (the C
    /// unpickler, which the walk follows, does not check them).
    pub(super) frame_error: Option<(usize, String)>,
}

impl PickleWalk {
    /// Whether bytes that do not announce a pickle (no `PROTO`/`FRAME` start) are one: the walk
    /// reached `STOP`, or imported a deny-listed global, or called an imported one, before failing.
    pub(super) fn plausible(&self) -> bool {
        self.end.is_some() || self.called || self.imports.iter().any(Imported::dangerous)
    }
}

pub(super) struct Machine {
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    imports: Vec<Imported>,
    seen: HashSet<Imported>,
    omitted: u64,
    protocol: Option<u8>,
    binary: bool,
    called: bool,
}

impl Machine {
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, item: Item) -> Result<(), Stop> {
        if self.stack.len() >= MAX_ITEMS {
            return bad(format!("stack deeper than {MAX_ITEMS} items"));
        }
        self.stack.push(item);
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, Stop> {
        if self.stack.len() <= self.base() {
            return bad("stack underflow");
        }
        self.stack
            .pop()
            .ok_or_else(|| Stop::Bad("stack underflow".into()))
    }

    fn top(&self) -> Result<&Item, Stop> {
        if self.stack.len() <= self.base() {
            return bad("stack underflow");
        }
        self.stack
            .last()
            .ok_or_else(|| Stop::Bad("stack underflow".into()))
    }

    /// Pops to the last mark; returns the first item above it, if any.
    fn pop_mark(&mut self) -> Result<Option<Item>, Stop> {
        let Some(mark) = self.marks.pop() else {
            return bad("no MARK on the stack");
        };
        let first = self.stack.get(mark).cloned();
        self.stack.truncate(mark);
        Ok(first)
    }

    fn string(&mut self, text: String) -> Result<(), Stop> {
        if text.len() > MAX_KEPT_STR {
            self.push(Item::Other)
        } else {
            self.push(Item::Str(Rc::from(text)))
        }
    }

    fn memo_get(&mut self, key: u64) -> Result<(), Stop> {
        match self.memo.get(&key) {
            Some(item) => {
                let item = item.clone();
                self.push(item)
            }
            None => bad(format!("memo key {key} was never stored")),
        }
    }

    fn memo_put(&mut self, key: u64) -> Result<(), Stop> {
        let item = self.top()?.clone();
        if self.memo.len() >= MAX_ITEMS && !self.memo.contains_key(&key) {
            return bad(format!("memo larger than {MAX_ITEMS} items"));
        }
        self.memo.insert(key, item);
        Ok(())
    }

    /// Records an import: distinct ones up to [`MAX_IMPORTS`], then only a count.
    fn record(&mut self, imported: Imported) {
        if self.seen.contains(&imported) {
            return;
        }
        if self.imports.len() >= MAX_IMPORTS {
            self.omitted += 1;
            return;
        }
        self.seen.insert(imported.clone());
        self.imports.push(imported);
    }

    fn import(&mut self, imported: Imported) -> Result<(), Stop> {
        self.record(imported);
        self.push(Item::Global)
    }

    /// A call opcode ran: after an import, the bytes are a pickle that executes something.
    fn call(&mut self) {
        if !self.imports.is_empty() || self.omitted > 0 {
            self.called = true;
        }
    }

    /// Executes one opcode symbolically; `Ok(true)` after `STOP`.
    fn step(&mut self, c: &mut Cursor<'_>) -> Result<bool, Stop> {
        let op = c.u8("opcode")?;
        match op {
            b'(' => {
                if self.marks.len() >= MAX_ITEMS {
                    return bad(format!("more than {MAX_ITEMS} marks"));
                }
                self.marks.push(self.stack.len());
            }
            b'.' => {
                self.pop()?;
                return Ok(true);
            }
            b'0' => {
                // POP: an item, or the mark right on top (CPython's load_pop).
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?.clone();
                self.push(top)?;
            }
            b'F' => {
                let line = c.line("FLOAT")?;
                number_line(line, "FLOAT")?;
                self.push(Item::Other)?;
            }
            b'I' => {
                let line = c.line("INT")?;
                number_line(line, "INT")?;
                self.push(Item::Other)?;
            }
            b'L' => {
                let line = c.line("LONG")?;
                number_line(line.strip_suffix(b"L").unwrap_or(line), "LONG")?;
                self.push(Item::Other)?;
            }
            b'J' => {
                c.take(4, "BININT")?;
                self.push(Item::Other)?;
            }
            b'K' => {
                c.take(1, "BININT1")?;
                self.push(Item::Other)?;
            }
            b'M' => {
                c.take(2, "BININT2")?;
                self.push(Item::Other)?;
            }
            b'G' => {
                c.take(8, "BINFLOAT")?;
                self.push(Item::Other)?;
            }
            0x8a => {
                let n = c.u8("LONG1 length")?;
                c.take(u64::from(n), "LONG1")?;
                self.push(Item::Other)?;
            }
            0x8b => {
                let n = c.i32("LONG4 length")?;
                let Ok(n) = u64::try_from(n) else {
                    return bad("LONG4 has a negative byte count");
                };
                c.take(n, "LONG4")?;
                self.push(Item::Other)?;
            }
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' | 0x8f | 0x97 => self.push(Item::Other)?,
            b'S' => {
                let line = c.line("STRING")?;
                let text = string_opcode(line)?;
                self.string(text)?;
            }
            b'T' => {
                let n = c.i32("BINSTRING length")?;
                let Ok(n) = u64::try_from(n) else {
                    return bad("BINSTRING has a negative length");
                };
                let bytes = c.take(n, "BINSTRING")?;
                self.string(latin1(bytes))?;
            }
            b'U' => {
                let n = c.u8("SHORT_BINSTRING length")?;
                let bytes = c.take(u64::from(n), "SHORT_BINSTRING")?;
                self.string(latin1(bytes))?;
            }
            b'V' => {
                let line = c.line("UNICODE")?;
                let text = raw_unicode_escape(line)?;
                self.string(text)?;
            }
            b'X' => {
                let n = c.u32("BINUNICODE length")?;
                let bytes = c.take(u64::from(n), "BINUNICODE")?;
                self.string(String::from_utf8_lossy(bytes).into_owned())?;
            }
            0x8c => {
                let n = c.u8("SHORT_BINUNICODE length")?;
                let bytes = c.take(u64::from(n), "SHORT_BINUNICODE")?;
                self.string(String::from_utf8_lossy(bytes).into_owned())?;
            }
            0x8d => {
                let n = c.u64("BINUNICODE8 length")?;
                let bytes = c.take(n, "BINUNICODE8")?;
                self.string(String::from_utf8_lossy(bytes).into_owned())?;
            }
            b'B' => {
                let n = c.u32("BINBYTES length")?;
                c.take(u64::from(n), "BINBYTES")?;
                self.push(Item::Other)?;
            }
            b'C' => {
                let n = c.u8("SHORT_BINBYTES length")?;
                c.take(u64::from(n), "SHORT_BINBYTES")?;
                self.push(Item::Other)?;
            }
            0x8e | 0x96 => {
                let n = c.u64("BINBYTES8 length")?;
                c.take(n, "BINBYTES8/BYTEARRAY8")?;
                self.push(Item::Other)?;
            }
            0x98 => {
                self.top()?;
            }
            b't' | b'l' | b'd' | 0x91 => {
                self.pop_mark()?;
                self.push(Item::Other)?;
            }
            0x85 => {
                self.pop()?;
                self.push(Item::Other)?;
            }
            0x86 => {
                self.pop()?;
                self.pop()?;
                self.push(Item::Other)?;
            }
            0x87 => {
                self.pop()?;
                self.pop()?;
                self.pop()?;
                self.push(Item::Other)?;
            }
            b'a' => {
                self.pop()?;
                self.top()?;
            }
            b'e' | b'u' | 0x90 => {
                self.pop_mark()?;
                self.top()?;
            }
            b's' => {
                self.pop()?;
                self.pop()?;
                self.top()?;
            }
            b'c' => {
                let module = utf8_line(c, "GLOBAL module")?;
                let name = utf8_line(c, "GLOBAL name")?;
                self.import(Imported::Named { module, name })?;
            }
            b'i' => {
                let module = utf8_line(c, "INST module")?;
                let name = utf8_line(c, "INST name")?;
                // CPython imports first, then pops the arguments and calls.
                self.record(Imported::Named { module, name });
                self.pop_mark()?;
                self.call();
                self.push(Item::Other)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let imported = match (module, name) {
                    (Item::Str(module), Item::Str(name)) => Imported::Named {
                        module: module.to_string(),
                        name: name.to_string(),
                    },
                    _ => Imported::Unresolved,
                };
                self.import(imported)?;
            }
            0x82..=0x84 => {
                let code = match op {
                    0x82 => i64::from(c.u8("EXT1 code")?),
                    0x83 => i64::from(c.u16("EXT2 code")?),
                    _ => i64::from(c.i32("EXT4 code")?),
                };
                if code <= 0 {
                    return bad("EXT specifies code <= 0");
                }
                self.import(Imported::Extension(code))?;
            }
            b'o' => {
                if self.pop_mark()?.is_none() {
                    return bad("OBJ without a class");
                }
                self.call();
                self.push(Item::Other)?;
            }
            b'R' | 0x81 => {
                self.pop()?;
                self.pop()?;
                self.call();
                self.push(Item::Other)?;
            }
            0x92 => {
                self.pop()?;
                self.pop()?;
                self.pop()?;
                self.call();
                self.push(Item::Other)?;
            }
            b'b' => {
                self.pop()?;
                self.top()?;
                self.call();
            }
            b'P' => {
                let line = c.line("PERSID")?;
                if !line.is_ascii() {
                    return bad("PERSID id is not ASCII");
                }
                self.push(Item::Other)?;
            }
            b'Q' => {
                self.pop()?;
                self.push(Item::Other)?;
            }
            b'g' => {
                let key = memo_key(c.line("GET")?, "GET")?;
                self.memo_get(key)?;
            }
            b'h' => {
                let key = c.u8("BINGET")?;
                self.memo_get(u64::from(key))?;
            }
            b'j' => {
                let key = c.u32("LONG_BINGET")?;
                self.memo_get(u64::from(key))?;
            }
            b'p' => {
                let key = memo_key(c.line("PUT")?, "PUT")?;
                self.memo_put(key)?;
            }
            b'q' => {
                let key = c.u8("BINPUT")?;
                self.memo_put(u64::from(key))?;
            }
            b'r' => {
                let key = c.u32("LONG_BINPUT")?;
                self.memo_put(u64::from(key))?;
            }
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            0x80 => {
                let protocol = c.u8("PROTO")?;
                if protocol > 5 {
                    return bad(format!("unsupported pickle protocol {protocol}"));
                }
                self.protocol.get_or_insert(protocol);
            }
            0x95 => {
                let n = c.u64("FRAME length")?;
                // The C unpickler only needs the frame's bytes to be there (it errs otherwise);
                // the Python one also refuses a frame that starts inside another.
                if (c.remaining() as u64) < n {
                    return Err(c.short("FRAME", n));
                }
                c.begin_frame(n);
            }
            other => return bad(format!("unknown opcode 0x{other:02x}")),
        }
        if !b"(.02FILNPRSVabcdgilpst".contains(&op) {
            self.binary = true;
        }
        Ok(false)
    }
}

pub(super) fn utf8_line(c: &mut Cursor<'_>, what: &str) -> Result<String, Stop> {
    let line = c.line(what)?;
    match std::str::from_utf8(line) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => bad(format!("{what} is not UTF-8")),
    }
}

/// A text-opcode number: what Python's `int(x, 0)`/`float(x)` could accept, loosely.
pub(super) fn number_line(line: &[u8], what: &str) -> Result<(), Stop> {
    let text = line.trim_ascii();
    let ok = !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        bad(format!("{what} argument is not a number"))
    }
}

/// A `GET`/`PUT` argument as CPython reads it: `int(line)` in base 10 (surrounding ASCII
/// whitespace, a sign, `_` between digits and leading zeros are all accepted), then, in the C
/// unpickler, a `Py_ssize_t` (a larger key overflows; a negative `PUT` is refused and a negative
/// `GET` finds nothing).
pub(super) fn memo_key(line: &[u8], what: &str) -> Result<u64, Stop> {
    match python_int(line) {
        None => bad(format!(
            "{what} argument {:?} is not an integer",
            String::from_utf8_lossy(line)
        )),
        Some(PyInt::Negative) => bad(format!("negative {what} argument")),
        Some(PyInt::Big) => bad(format!(
            "{what} argument {:?} overflows the C unpickler's memo index",
            String::from_utf8_lossy(line)
        )),
        Some(PyInt::Small(key)) => Ok(key),
    }
}

/// What Python's `int(bytes)` (base 10) makes of a line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PyInt {
    /// `0 ..= isize::MAX` (64-bit).
    Small(u64),
    /// Above `isize::MAX`.
    Big,
    /// Below zero.
    Negative,
}

/// Python's `int()` in base 10 on bytes: ASCII whitespace around, an optional sign, then digits
/// with single `_` between them; `None` where Python raises `ValueError`.
pub(super) fn python_int(line: &[u8]) -> Option<PyInt> {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = line.iter().position(|b| !space(b))?;
    let end = line.iter().rposition(|b| !space(b))? + 1;
    let mut text = line.get(start..end)?;
    let negative = match text.first() {
        Some(b'-') => true,
        Some(b'+') => false,
        _ => {
            return digits(text).map(|v| v.map_or(PyInt::Big, PyInt::Small));
        }
    };
    text = text.get(1..)?;
    let value = digits(text)?;
    Some(match (negative, value) {
        (true, Some(0)) => PyInt::Small(0),
        (true, _) => PyInt::Negative,
        (false, Some(v)) => PyInt::Small(v),
        (false, None) => PyInt::Big,
    })
}

/// Decimal digits with single underscores between them; `Some(None)` above `i64::MAX`.
fn digits(text: &[u8]) -> Option<Option<u64>> {
    if text.first().is_none_or(|b| !b.is_ascii_digit())
        || text.last().is_none_or(|b| !b.is_ascii_digit())
    {
        return None;
    }
    let mut value: Option<u64> = Some(0);
    let mut prev_underscore = false;
    for &b in text {
        if b == b'_' {
            if prev_underscore {
                return None;
            }
            prev_underscore = true;
            continue;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        prev_underscore = false;
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .filter(|&v| v <= i64::MAX as u64);
    }
    Some(value)
}

pub(super) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `STRING`: a quoted, backslash-escaped line (CPython: strip quotes, `codecs.escape_decode`).
pub(super) fn string_opcode(line: &[u8]) -> Result<String, Stop> {
    let inner = match line {
        [q, inner @ .., last] if q == last && matches!(q, b'\'' | b'"') => inner,
        _ => return bad("the STRING opcode argument must be quoted"),
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return bad("STRING ends with a lone backslash");
        };
        i += 1;
        match e {
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => return bad("invalid \\x escape in STRING"),
                }
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(latin1(&out))
}

/// `UNICODE`: Python's `raw-unicode-escape`: latin-1, except `\uXXXX` and `\UXXXXXXXX` after an
/// odd run of backslashes.
pub(super) fn raw_unicode_escape(line: &[u8]) -> Result<String, Stop> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b != b'\\' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let run = line
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&c| c == b'\\')
            .count();
        let after = line.get(i + run).copied();
        let digits = match after {
            Some(b'u') if run % 2 == 1 => 4,
            Some(b'U') if run % 2 == 1 => 8,
            _ => {
                out.extend(std::iter::repeat_n('\\', run));
                i += run;
                continue;
            }
        };
        out.extend(std::iter::repeat_n('\\', run - 1));
        let hex = line
            .get(i + run + 1..i + run + 1 + digits)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match hex {
            // Python keeps a lone surrogate in a str; it can name nothing importable.
            Some(0xd800..=0xdfff) => out.push(char::REPLACEMENT_CHARACTER),
            Some(v) => match char::from_u32(v) {
                Some(ch) => out.push(ch),
                None => return bad("\\U escape above U+10FFFF in UNICODE"),
            },
            None => return bad("truncated or invalid \\u escape in UNICODE"),
        }
        i += run + 1 + digits;
    }
    Ok(out)
}

/// Walks one pickle from `start`, following the C unpickler (`_pickle.c`), which `pickle.load`
/// and `torch.load` use, and noting where CPython's Python unpickler (`pickle._Unpickler`) would
/// refuse the `FRAME` layout instead.
pub(super) fn walk_pickle(
    buf: &[u8],
    start: usize,
    eof: Eof,
    total: u64,
) -> Result<PickleWalk, Stop> {
    let mut m = Machine {
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        imports: Vec::new(),
        seen: HashSet::new(),
        omitted: 0,
        protocol: None,
        binary: false,
        called: false,
    };
    let mut c = Cursor::new(buf, start, eof, total);
    c.frames = Some(Frames::default());
    loop {
        let at = c.pos;
        let step = m.step(&mut c);
        let (end, error) = match step {
            Ok(false) => continue,
            Ok(true) => (Some(c.pos), None),
            Err(Stop::More) => return Err(Stop::More),
            Err(Stop::Bad(message)) => (None, Some((at, message))),
        };
        return Ok(PickleWalk {
            start,
            imports: m.imports,
            omitted: m.omitted,
            protocol: m.protocol,
            binary: m.binary,
            called: m.called,
            end,
            error,
            frame_error: c.frames.and_then(|f| f.error),
        });
    }
}

/// The first pickle of a legacy (pre-1.6) `torch.save` file: `PROTO 2`, the magic number
/// `0x1950a86a20f9469cfc6c` as `LONG1`, `STOP`.
const LEGACY_TORCH_MAGIC: &[u8] = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// Pickles read by the legacy `torch.load`: magic number, protocol version, system info, the
/// model, the storage keys; raw storage bytes follow.
const LEGACY_TORCH_PICKLES: usize = 5;

/// The pickles of a file, one after another until the end or bytes that are no pickle.
pub(super) struct PickleStream {
    pub(super) walks: Vec<PickleWalk>,
    /// Offset and length of bytes after the last pickle.
    pub(super) trailing: Option<(u64, u64)>,
    /// The stream is a legacy `torch.save` file.
    pub(super) legacy_torch: bool,
    /// More than [`MAX_PICKLES`] pickles: the rest were not walked.
    pub(super) too_many: bool,
}

impl PickleStream {
    pub(super) fn protocol(&self) -> u8 {
        match self.walks.first() {
            Some(PickleWalk {
                protocol: Some(p), ..
            }) => *p,
            Some(w) if w.binary => 1,
            _ => 0,
        }
    }

    pub(super) fn import_count(&self) -> usize {
        let all: HashSet<&Imported> = self.walks.iter().flat_map(|w| w.imports.iter()).collect();
        all.len()
    }

    /// Whether the first pickle reached `STOP` or did something only a pickle does.
    pub(super) fn plausible(&self) -> bool {
        self.walks.first().is_some_and(PickleWalk::plausible)
    }
}

/// Walks the pickles from `start`: `pickle.load` called in a loop (and `torch.load`'s legacy
/// format, which reads five pickles whatever their first opcode) reads one after another, so
/// every pickle is walked, `PROTO` or not, until the end of the bytes. After the first, bytes
/// that are not [`PickleWalk::plausible`] are trailing data; in a legacy torch file everything
/// after the fifth pickle is (storage bytes), and the five must all be pickles.
pub(super) fn walk_stream(
    buf: &[u8],
    start: usize,
    eof: Eof,
    total: u64,
) -> Result<PickleStream, Stop> {
    let mut stream = PickleStream {
        walks: Vec::new(),
        trailing: None,
        legacy_torch: false,
        too_many: false,
    };
    let mut pos = start;
    loop {
        let walk = walk_pickle(buf, pos, eof, total)?;
        if stream.walks.is_empty() {
            stream.legacy_torch = walk.end.is_some_and(|end| {
                buf.get(pos..end).is_some_and(|b| {
                    b.windows(LEGACY_TORCH_MAGIC.len())
                        .any(|w| w == LEGACY_TORCH_MAGIC)
                })
            });
        }
        let required = stream.walks.is_empty()
            || (stream.legacy_torch && stream.walks.len() < LEGACY_TORCH_PICKLES);
        if !required && !walk.plausible() {
            stream.trailing = Some((pos as u64, total.saturating_sub(pos as u64)));
            return Ok(stream);
        }
        let end = walk.end;
        stream.walks.push(walk);
        let Some(end) = end else {
            return Ok(stream);
        };
        let left = total.saturating_sub(end as u64);
        if left == 0 {
            return Ok(stream);
        }
        if stream.legacy_torch && stream.walks.len() == LEGACY_TORCH_PICKLES {
            stream.trailing = Some((end as u64, left));
            return Ok(stream);
        }
        if stream.walks.len() >= MAX_PICKLES {
            stream.too_many = true;
            stream.trailing = Some((end as u64, left));
            return Ok(stream);
        }
        if end >= buf.len() {
            if eof == Eof::More {
                return Err(Stop::More);
            }
            // Cut at the scan limit: what follows was not read.
            stream.trailing = Some((end as u64, left));
            return Ok(stream);
        }
        pos = end;
    }
}

/// How an import is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Allowed,
    Dangerous,
    Unknown,
}

pub(super) const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "_posixsubprocess",
    "pty",
    "sys",
    "shutil",
    "runpy",
    "code",
    "codeop",
    "commands",
    "importlib",
    "imp",
    "pkgutil",
    "zipimport",
    "marshal",
    "pickle",
    "_pickle",
    "shelve",
    "dill",
    "cloudpickle",
    "ctypes",
    "_ctypes",
    "socket",
    "_socket",
    "ssl",
    "webbrowser",
    "requests",
    "urllib",
    "urllib2",
    "urllib3",
    "http",
    "httplib",
    "ftplib",
    "smtplib",
    "telnetlib",
    "xmlrpc",
    "asyncio",
    "multiprocessing",
    "threading",
    "_thread",
    "signal",
    "pdb",
    "bdb",
    "timeit",
    "profile",
    "cProfile",
    "trace",
    "pip",
    "setuptools",
    "distutils",
    "io",
    "_io",
    "pathlib",
    "fileinput",
    "tempfile",
    "_winapi",
    "winreg",
    "msvcrt",
    "torch.hub",
    "torch.jit",
    "torch.package",
];

pub(super) const DANGEROUS_BUILTINS: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "open",
    "file",
    "__import__",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "breakpoint",
    "input",
    "apply",
    "reload",
];

pub(super) const DANGEROUS_NAMES: &[(&str, &str)] = &[
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("types", "LambdaType"),
    ("types", "MethodType"),
    ("types", "ModuleType"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("torch", "load"),
    ("torch.storage", "_load_from_bytes"),
    ("numpy", "load"),
];

pub(super) const ALLOWED_NAMES: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
];

pub(super) const ALLOWED_BUILTINS: &[&str] = &["set", "frozenset", "bytearray", "complex", "slice"];

/// `torch.<name>` attributes that are plain values: dtypes, layouts, memory formats, qschemes.
pub(super) const TORCH_VALUES: &[&str] = &[
    "Size",
    "Tensor",
    "device",
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "chalf",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
];

pub(super) fn in_module(module: &str, root: &str) -> bool {
    module == root
        || module
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('.'))
}

pub(super) fn classify(module: &str, name: &str) -> Class {
    let head = name.split('.').next().unwrap_or(name);
    let builtins = module == "builtins" || module == "__builtin__";
    if DANGEROUS_MODULES.iter().any(|root| in_module(module, root))
        || (builtins && DANGEROUS_BUILTINS.contains(&head))
        || DANGEROUS_NAMES
            .iter()
            .any(|(m, n)| *m == module && *n == head)
    {
        return Class::Dangerous;
    }
    let identifier =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let allowed = ALLOWED_NAMES.contains(&(module, name))
        || (builtins && ALLOWED_BUILTINS.contains(&name))
        || (module == "torch" && TORCH_VALUES.contains(&name))
        || (module == "torch" && name.ends_with("Storage") && identifier(name))
        || (module == "numpy.dtypes" && name.ends_with("DType") && identifier(name));
    if allowed {
        Class::Allowed
    } else {
        Class::Unknown
    }
}

/// Whether `s` is a dotted Python identifier (used to recognise protocol 0/1 pickles).
pub(super) fn dotted_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            part.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Adds the findings of a walked pickle stream.
pub(super) fn report_pickles(stream: &PickleStream, entry: Option<&str>, r: &mut Builder) {
    let several = stream.walks.len() > 1;
    for walk in &stream.walks {
        let which = if several || walk.start > 0 {
            format!("pickle at byte {}", walk.start)
        } else {
            "pickle".to_string()
        };
        for imported in &walk.imports {
            let shown = imported.display();
            r.global(&shown);
            let (rule, text) = match imported {
                Imported::Named { module, name } => match classify(module, name) {
                    Class::Allowed => continue,
                    Class::Dangerous => (
                        Rule::PickleDangerousGlobal,
                        format!(
                            "pickle imports {shown}, which can run commands or code when unpickled"
                        ),
                    ),
                    Class::Unknown => (
                        Rule::PickleUnknownGlobal,
                        format!(
                            "pickle imports {shown}, which is not on the allow-list; unpickling \
                             may call it"
                        ),
                    ),
                },
                Imported::Unresolved => (
                    Rule::PickleUnresolvedGlobal,
                    "pickle imports a global through STACK_GLOBAL on operands that are not \
                     constant strings; it cannot be checked"
                        .to_string(),
                ),
                Imported::Extension(code) => (
                    Rule::PickleUnresolvedGlobal,
                    format!(
                        "pickle imports extension code {code} of copyreg's registry; it cannot be \
                         checked"
                    ),
                ),
            };
            r.add(rule, prefixed(entry, &text), Some(shown), entry);
        }
        r.omit_globals(walk.omitted);
        if let Some((offset, message)) = &walk.frame_error {
            r.add(
                Rule::PickleInvalid,
                prefixed(
                    entry,
                    &format!(
                        "{which}: {message} (at byte {offset}): CPython's Python unpickler \
                         refuses this FRAME layout, its C unpickler (pickle.load, torch.load) \
                         reads on; readers disagree on what it holds"
                    ),
                ),
                None,
                entry,
            );
        }
        if let Some((offset, message)) = &walk.error {
            r.add(
                Rule::PickleInvalid,
                prefixed(
                    entry,
                    &format!("malformed {which}: {message} (at byte {offset})"),
                ),
                None,
                entry,
            );
        }
    }
    if stream.too_many {
        r.add(
            Rule::ScanBudget,
            prefixed(
                entry,
                &format!("more than {MAX_PICKLES} pickles in a row; the rest were not inspected"),
            ),
            None,
            entry,
        );
    } else if let Some((offset, len)) = stream.trailing {
        let what = if stream.legacy_torch {
            "after the five pickles of a legacy torch.save file (its storages)"
        } else {
            "after the pickle stream"
        };
        r.add(
            Rule::PickleTrailingData,
            prefixed(
                entry,
                &format!(
                    "{} {what} (from byte {offset}) were not inspected",
                    plural(usize::try_from(len).unwrap_or(usize::MAX), "byte", "bytes")
                ),
            ),
            None,
            entry,
        );
    }
    r.add(
        Rule::PickleFormat,
        "pickle format: loading it executes code, and trainprov's loaders refuse it; convert \
         to safetensors"
            .into(),
        None,
        None,
    );
}

pub(super) fn pickle_summary(r: &mut Builder, stream: &PickleStream) {
    let globals = stream.import_count();
    let mut summary = format!("{}, {}", r.format, plural(globals, "global", "globals"));
    if stream.walks.len() > 1 {
        summary.push_str(&format!(" in {} pickles", stream.walks.len()));
    }
    if stream.legacy_torch {
        summary.push_str(" (legacy torch.save)");
    }
    r.summary = summary;
}

/// Walks the pickles of a file or entry and reports them. `strict`: the bytes announce a pickle
/// (`PROTO`/`FRAME` first, or a pickle's name), so anything wrong is a finding; otherwise they
/// are taken for one only if [`PickleStream::plausible`]. Returns whether they were.
pub(super) fn scan_pickle(
    blob: &dyn Blob,
    entry: Option<&str>,
    strict: bool,
    r: &mut Builder,
) -> io::Result<bool> {
    let stream = with_prefix(blob, |buf, eof, total| walk_stream(buf, 0, eof, total))?;
    match stream {
        Ok(stream) => {
            if !strict && !stream.plausible() {
                return Ok(false);
            }
            if entry.is_none() {
                r.format = Format::Pickle {
                    protocol: stream.protocol(),
                };
                pickle_summary(r, &stream);
            }
            report_pickles(&stream, entry, r);
        }
        Err(message) => {
            if !strict {
                return Ok(false);
            }
            if entry.is_none() {
                r.format = Format::Pickle { protocol: 0 };
                r.summary = "pickle".into();
            }
            r.add(
                Rule::PickleInvalid,
                prefixed(entry, &format!("malformed pickle: {message}")),
                None,
                entry,
            );
        }
    }
    Ok(true)
}

/// Opcodes a pickle can start with (they need nothing on the stack): `MARK`, every opcode that
/// pushes a constant, `GLOBAL`, `PERSID`, `EXT1/2/4`, `PROTO` and `FRAME`.
pub(super) fn can_start_pickle(byte: u8) -> bool {
    b"(cILFSVNKJMTUXGBCP]})".contains(&byte)
        || matches!(byte, 0x80 | 0x82..=0x84 | 0x88..=0x8f | 0x95..=0x97)
}

/// Bytes that announce a pickle: `PROTO` 0 to 5, or `FRAME`.
pub(super) fn announces_pickle(head: &[u8]) -> bool {
    matches!(head, [0x80, 0..=5, ..] | [0x95, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_examples() {
        assert_eq!(classify("os", "system"), Class::Dangerous);
        assert_eq!(classify("os.path", "join"), Class::Dangerous);
        assert_eq!(classify("ntpath", "join"), Class::Unknown);
        assert_eq!(classify("builtins", "getattr"), Class::Dangerous);
        assert_eq!(classify("__builtin__", "eval"), Class::Dangerous);
        assert_eq!(classify("builtins", "set"), Class::Allowed);
        assert_eq!(classify("torch", "FloatStorage"), Class::Allowed);
        assert_eq!(classify("torch", "FloatStorage.__init__"), Class::Unknown);
        assert_eq!(
            classify("torch._utils", "_rebuild_tensor_v2"),
            Class::Allowed
        );
        assert_eq!(classify("torch", "load"), Class::Dangerous);
        assert_eq!(classify("collections", "OrderedDict"), Class::Allowed);
    }

    #[test]
    fn string_escapes_decode() {
        assert_eq!(string_opcode(b"'o\\x73'").ok().as_deref(), Some("os"));
        assert_eq!(string_opcode(b"\"a\\\\b\"").ok().as_deref(), Some("a\\b"));
        assert_eq!(string_opcode(b"'\\157s'").ok().as_deref(), Some("os"));
        assert!(string_opcode(b"os").is_err());
        assert_eq!(raw_unicode_escape(b"\\u006fs").ok().as_deref(), Some("os"));
        assert_eq!(
            raw_unicode_escape(b"\\\\u006f").ok().as_deref(),
            Some("\\\\u006f")
        );
        // A lone surrogate is a str in Python: the walk goes on.
        assert_eq!(
            raw_unicode_escape(b"\\ud800").ok().as_deref(),
            Some("\u{fffd}")
        );
    }

    /// Python's `int()` on bytes, base 10 (values from CPython 3.11).
    #[test]
    fn issue11_memo_keys_follow_python_int() {
        for (text, want) in [
            (&b"1"[..], Some(PyInt::Small(1))),
            (b"  1", Some(PyInt::Small(1))),
            (b"1\r", Some(PyInt::Small(1))),
            (b"\x0b1\x0c", Some(PyInt::Small(1))),
            (b"+1", Some(PyInt::Small(1))),
            (b"0_1", Some(PyInt::Small(1))),
            (b"007", Some(PyInt::Small(7))),
            (b"-0", Some(PyInt::Small(0))),
            (b"-1", Some(PyInt::Negative)),
            (b"99999999999999999999", Some(PyInt::Big)),
            (b"1__0", None),
            (b"_1", None),
            (b"1_", None),
            (b"0x1", None),
            (b"1 2", None),
            (b"", None),
            (b"+", None),
        ] {
            assert_eq!(
                python_int(text),
                want,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
