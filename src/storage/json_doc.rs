//! A small lossless JSON layer for credentials files: validate a document, read the few values a
//! provider needs, and write changes back by editing the original bytes.
//!
//! - [`validate`] checks the whole document with an iterative scanner (no recursion, so no
//!   recursion limit; an explicit cap of [`MAX_DEPTH`] levels), accepting what Node's
//!   `JSON.parse` and Python's `json` accept: lone surrogate escapes (`"\ud800"`) and bytes that
//!   are not UTF-8 inside strings are valid here, and nothing is decoded.
//! - [`scan`] does the same in the same single pass and notes where the root object's members
//!   are, so that [`Scanned::view`] builds a `serde_json::Value` of only the top-level members a
//!   provider reads (its "view" of the file, [`Provider::doc_keys`]) without reading the rest
//!   again: every other member stays raw bytes and is never decoded or allocated. Strings in the
//!   view are decoded lossily (a lone surrogate or a non-UTF-8 byte becomes U+FFFD); that never
//!   reaches the file, see below. A view nests at most [`MAX_VIEW_DEPTH`] levels, since a
//!   `Value` is dropped, cloned and compared by recursion.
//!
//! [`Provider::doc_keys`]: crate::provider::Provider::doc_keys
//! - [`rewrite`] writes a changed view back: it walks the original bytes and the new `Value`
//!   together, and every member or element whose value is unchanged (compared as decoded) keeps
//!   its original bytes: number spellings, string escapes, key order, whitespace and indentation.
//!   Only values that differ are written anew, in the file's own layout (one line, or indented
//!   as the file is); new members go at the end of their object. Members outside the view are
//!   copied as they are.

use serde_json::{Map, Value};
use std::ops::Range;

/// Deeper nesting than this is refused (no credentials file comes near it).
pub const MAX_DEPTH: usize = 10_000;

/// Deeper nesting than this inside a provider's view is refused: a `Value` is dropped, cloned and
/// compared by recursion, which must stay well within a thread's stack.
pub const MAX_VIEW_DEPTH: usize = 512;

/// Where and why a document is not JSON, for messages. Holds no byte of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    /// The limit ([`MAX_DEPTH`] or [`MAX_VIEW_DEPTH`]) when the document is valid so far but
    /// nests deeper than that.
    pub too_deep: Option<usize>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[inline(always)]
fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while let Some(&c) = b.get(pos) {
        // Every whitespace byte is below `!`: most bytes are decided by one comparison.
        if c > b' ' || !is_ws(c) {
            break;
        }
        pos += 1;
    }
    pos
}

fn error_at(b: &[u8], pos: usize, too_deep: Option<usize>) -> SyntaxError {
    let pos = pos.min(b.len());
    let before = &b[..pos];
    let line = 1 + before.iter().filter(|c| **c == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|c| *c == b'\n')
        .map_or(0, |i| i + 1);
    SyntaxError {
        line,
        column: pos - line_start + 1,
        too_deep,
    }
}

/// The first `"`, `\\` or control character at or after `i` (or the end), eight bytes at a time.
fn next_special(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(chunk);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGHS;
        if found != 0 {
            // The lowest flag is the first special byte: a subtraction's borrow can set a false
            // flag above a special byte, never below one.
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
}

/// The end of the string starting at `pos` (a `"`), checking its escapes; bytes that are not
/// UTF-8 are accepted as they are.
#[inline(always)]
fn scan_string(b: &[u8], pos: usize) -> Result<usize, usize> {
    let mut i = pos + 1;
    loop {
        i = next_special(b, i);
        let Some(&c) = b.get(i) else {
            return Err(i);
        };
        match c {
            b'"' => return Ok(i + 1),
            b'\\' => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    for k in 0..4 {
                        if !b.get(i + 2 + k).is_some_and(u8::is_ascii_hexdigit) {
                            return Err(i + 2 + k);
                        }
                    }
                    i += 6;
                }
                _ => return Err(i + 1),
            },
            0..=0x1f => return Err(i),
            _ => i += 1,
        }
    }
}

/// The end of the number starting at `pos`.
fn scan_number(b: &[u8], pos: usize) -> Result<usize, usize> {
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut i = pos;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while digit(i) {
                i += 1;
            }
        }
        _ => return Err(i),
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digit(i) {
            return Err(i);
        }
        while digit(i) {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digit(i) {
            return Err(i);
        }
        while digit(i) {
            i += 1;
        }
    }
    Ok(i)
}

/// Checks that `b` is one JSON value with only whitespace around it.
pub fn validate(b: &[u8]) -> Result<(), SyntaxError> {
    scan(b).map(|_| ())
}

/// What one pass over a valid document found: where the root object's members are.
#[derive(Clone, Debug, Default)]
pub struct Scanned {
    /// Each top-level member's key (with quotes) and value, in order; none when the document is
    /// not an object.
    top: Vec<(Range<usize>, Range<usize>)>,
}

/// Checks `b` as [`validate`] does, noting where the root object's members are on the way.
pub fn scan(b: &[u8]) -> Result<Scanned, SyntaxError> {
    let err = |pos: usize| error_at(b, pos, None);
    let mut stack: Vec<u8> = Vec::new();
    let mut top = Vec::new();
    // A top-level member whose value has started: its key and where the value starts.
    let mut pending: Option<(Range<usize>, usize)> = None;
    let mut pos = skip_ws(b, 0);
    'value: loop {
        // A value starts at `pos`.
        match b.get(pos) {
            Some(&open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                pos = skip_ws(b, pos + 1);
                if b.get(pos) == Some(&close) {
                    pos += 1;
                } else {
                    if stack.len() >= MAX_DEPTH {
                        return Err(error_at(b, pos, Some(MAX_DEPTH)));
                    }
                    stack.push(open);
                    pos = member_value(b, pos, &stack, &mut pending).map_err(err)?;
                    continue 'value;
                }
            }
            Some(b'"') => pos = scan_string(b, pos).map_err(err)?,
            Some(b'-' | b'0'..=b'9') => pos = scan_number(b, pos).map_err(err)?,
            Some(b't') => pos = literal(b, pos, b"true").map_err(err)?,
            Some(b'f') => pos = literal(b, pos, b"false").map_err(err)?,
            Some(b'n') => pos = literal(b, pos, b"null").map_err(err)?,
            _ => return Err(err(pos)),
        }
        // After a value: close containers, or go on to the next member or element.
        loop {
            if stack.len() == 1
                && let Some((key, start)) = pending.take()
            {
                top.push((key, start..pos));
            }
            pos = skip_ws(b, pos);
            let Some(&open) = stack.last() else {
                if pos == b.len() {
                    return Ok(Scanned { top });
                }
                return Err(err(pos));
            };
            match (open, b.get(pos)) {
                (_, Some(b',')) => {
                    pos = skip_ws(b, pos + 1);
                    pos = member_value(b, pos, &stack, &mut pending).map_err(err)?;
                    continue 'value;
                }
                (b'{', Some(b'}')) | (b'[', Some(b']')) => {
                    stack.pop();
                    pos += 1;
                }
                _ => return Err(err(pos)),
            }
        }
    }
}

/// Where the next value starts, from `pos` inside the innermost container of `stack`: in an
/// array, there; in an object, after the key at `pos` and its `:` (a member of the root object
/// is noted in `pending`: its key, and where its value starts).
#[inline(always)]
fn member_value(
    b: &[u8],
    pos: usize,
    stack: &[u8],
    pending: &mut Option<(Range<usize>, usize)>,
) -> Result<usize, usize> {
    if stack.last() != Some(&b'{') {
        return Ok(pos);
    }
    let (key_end, value) = key_and_colon(b, pos)?;
    if stack.len() == 1 {
        *pending = Some((pos..key_end, value));
    }
    Ok(value)
}

/// A key at `pos`, then `:`; returns where the key ends and where its value starts.
#[inline(always)]
fn key_and_colon(b: &[u8], pos: usize) -> Result<(usize, usize), usize> {
    if b.get(pos) != Some(&b'"') {
        return Err(pos);
    }
    let key_end = scan_string(b, pos)?;
    let colon = skip_ws(b, key_end);
    if b.get(colon) != Some(&b':') {
        return Err(colon);
    }
    Ok((key_end, skip_ws(b, colon + 1)))
}

/// [`scan`] for a reader that writes nothing and reads only the top-level members `keys` names
/// (a fast path: is the token fresh?): those members are checked as `scan` checks them, every
/// other member's value is only skipped over, its strings and brackets followed to its end but
/// its contents not checked. A document cut off, unbalanced or not an object is found as `scan`
/// finds it, and any trouble is reported by `scan` itself, so errors read the same. What this
/// lets through (a malformed value in a member no one reads) `scan` refuses before any write.
/// Without `keys` (the whole document is read), it is `scan`.
pub fn skim(b: &[u8], keys: Option<&[String]>) -> Result<Scanned, SyntaxError> {
    match keys.and_then(|keys| skim_members(b, keys)) {
        Some(top) => Ok(Scanned { top }),
        None => scan(b),
    }
}

/// The root object's members, each value in `keys` checked and the others skipped; None when
/// anything is amiss (then `scan` says what).
fn skim_members(b: &[u8], keys: &[String]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let mut top = Vec::new();
    let mut pos = skip_ws(b, 0);
    if b.get(pos) != Some(&b'{') {
        return None;
    }
    pos = skip_ws(b, pos + 1);
    if b.get(pos) != Some(&b'}') {
        loop {
            let (key_end, start) = key_and_colon(b, pos).ok()?;
            let key = pos..key_end;
            let end = skip_value_unchecked(b, start)?;
            if keys.iter().any(|k| key_is(&b[key.clone()], k)) {
                // Read, so checked: one value, and `to_value` may take it as valid.
                scan(&b[start..end]).ok()?;
            }
            top.push((key, start..end));
            pos = skip_ws(b, end);
            match b.get(pos) {
                Some(b',') => pos = skip_ws(b, pos + 1),
                Some(b'}') => break,
                _ => return None,
            }
        }
    }
    (skip_ws(b, pos + 1) == b.len()).then_some(top)
}

/// The end of the value at `pos`: a string, number or literal checked as `scan` checks it; an
/// object or array followed to its closing bracket without checking what is inside (None when
/// it never closes).
fn skip_value_unchecked(b: &[u8], pos: usize) -> Option<usize> {
    match b.get(pos)? {
        b'{' | b'[' => container_end(b, pos),
        b'"' => scan_string(b, pos).ok(),
        b'-' | b'0'..=b'9' => scan_number(b, pos).ok(),
        b't' => literal(b, pos, b"true").ok(),
        b'f' => literal(b, pos, b"false").ok(),
        b'n' => literal(b, pos, b"null").ok(),
        _ => None,
    }
}

/// Following brackets and strings through a container, a byte at a time where it matters.
#[derive(Clone, Copy, Default)]
struct Brackets {
    depth: usize,
    in_string: bool,
    /// The byte after a backslash in a string, which neither ends the string nor escapes.
    escaped: bool,
}

impl Brackets {
    /// Takes one byte that may matter (a quote, a backslash, a bracket); true when it closed the
    /// container.
    #[inline(always)]
    fn take(&mut self, c: u8) -> Result<bool, ()> {
        if self.escaped {
            self.escaped = false;
        } else if self.in_string {
            match c {
                b'"' => self.in_string = false,
                b'\\' => self.escaped = true,
                _ => {}
            }
        } else {
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    return Ok(self.depth == 0);
                }
                b'\\' => return Err(()),
                _ => {}
            }
        }
        Ok(false)
    }
}

/// The end of the object or array opening at `pos` (after its closing bracket), found by
/// following strings and brackets only; None when it never closes or a backslash stands outside
/// a string. Sixteen bytes at a time where SSE2 is at hand (every x86-64), else byte by byte.
fn container_end(b: &[u8], pos: usize) -> Option<usize> {
    let mut state = Brackets::default();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64 itself: every such processor has it.
    let i = match unsafe { blocks_sse2(b, pos, &mut state) }? {
        Ok(end) => return Some(end),
        Err(tail) => tail,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let i = pos;
    for (k, &c) in b.iter().enumerate().skip(i) {
        if state.take(c).ok()? {
            return Some(k + 1);
        }
    }
    None
}

/// The number of bits set in the low 16 of `x`, by table: x86-64 itself has no instruction for
/// it, and the generic sequence doubled the time of a block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn ones16(x: u32) -> usize {
    const ONES: [u8; 256] = {
        let mut table = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            table[i] = (i as u8).count_ones() as u8;
            i += 1;
        }
        table
    };
    usize::from(ONES[(x & 0xff) as usize]) + usize::from(ONES[((x >> 8) & 0xff) as usize])
}

/// [`container_end`]'s walk over the whole 16-byte blocks from `i`. Each block's quotes,
/// backslashes and brackets are found at once, a bit each. A block without a backslash, in which
/// the container cannot close, is taken whole: which bytes lie inside strings follows from the
/// quotes alone (each bit of `inside` is the parity of the quotes up to it), and the brackets
/// outside strings only change the depth. Any other block is taken a flagged byte at a time.
/// Some(Ok(end)) when the container closes, Some(Err(at)) where the bytes left over start, None
/// when it is not JSON.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn blocks_sse2(b: &[u8], mut i: usize, state: &mut Brackets) -> Option<Result<usize, usize>> {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let [quote, backslash, open, close, open_sq, close_sq] =
        [b'"', b'\\', b'{', b'}', b'[', b']'].map(|c| _mm_set1_epi8(c as i8));
    while let Some(block) = b.get(i..i + 16) {
        // SAFETY: `block` has 16 bytes; an unaligned load reads exactly those.
        let v = unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) };
        let bits = |m: __m128i| _mm_movemask_epi8(m) as u32;
        let quotes = bits(_mm_cmpeq_epi8(v, quote));
        let backslashes = bits(_mm_cmpeq_epi8(v, backslash));
        let opens = bits(_mm_or_si128(
            _mm_cmpeq_epi8(v, open),
            _mm_cmpeq_epi8(v, open_sq),
        ));
        let closes = bits(_mm_or_si128(
            _mm_cmpeq_epi8(v, close),
            _mm_cmpeq_epi8(v, close_sq),
        ));
        if backslashes == 0 && !state.escaped {
            let mut inside = quotes;
            inside ^= inside << 1;
            inside ^= inside << 2;
            inside ^= inside << 4;
            inside ^= inside << 8;
            if state.in_string {
                inside = !inside;
            }
            let (opens, closes) = (ones16(opens & !inside), ones16(closes & !inside));
            if closes < state.depth {
                state.depth = state.depth + opens - closes;
                state.in_string = inside & 0x8000 != 0;
                i += 16;
                continue;
            }
        }
        let mut mask = quotes | backslashes | opens | closes;
        if state.escaped && mask & 1 == 0 {
            // The byte a backslash at the end of the last block escapes is a plain one.
            state.escaped = false;
        }
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            if state.take(block[k]).ok()? {
                return Some(Ok(i + k + 1));
            }
            mask &= mask - 1;
            // A backslash just taken escapes the next byte: when that one is not flagged (a
            // plain byte), it is passed over here; in the next block, there.
            if state.escaped && mask & (1 << (k + 1)) == 0 {
                state.escaped = k == 15;
            }
        }
        i += 16;
    }
    Some(Err(i))
}

fn literal(b: &[u8], pos: usize, word: &[u8]) -> Result<usize, usize> {
    if b[pos..].starts_with(word) {
        Ok(pos + word.len())
    } else {
        Err(pos)
    }
}

/// The end of the (valid) value starting at `pos`.
fn skip_value(b: &[u8], pos: usize) -> usize {
    match b.get(pos) {
        Some(b'"') => scan_string(b, pos).unwrap_or(b.len()),
        Some(b'{' | b'[') => container_end(b, pos).unwrap_or(b.len()),
        _ => {
            let mut i = pos;
            while i < b.len() && !is_ws(b[i]) && !matches!(b[i], b',' | b'}' | b']') {
                i += 1;
            }
            i
        }
    }
}

/// One member of an object (or element of an array) in the original bytes.
#[derive(Clone, Debug)]
struct Item {
    /// Whitespace before it, after the `{`, `[` or `,`.
    lead: Range<usize>,
    /// The key with its quotes (objects only).
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// Whitespace after it, before the `,` or the closing bracket.
    trail: Range<usize>,
}

/// The members or elements of the (valid) container at `pos`, and where its closing bracket is.
fn items(b: &[u8], pos: usize) -> (Vec<Item>, usize) {
    let object = b[pos] == b'{';
    let mut out = Vec::new();
    let mut at = pos + 1;
    let first = skip_ws(b, at);
    if matches!(b.get(first), Some(b'}' | b']')) {
        return (out, first);
    }
    loop {
        let start = skip_ws(b, at);
        let (key, value_start) = if object {
            let key_end = scan_string(b, start).unwrap_or(b.len());
            let colon = skip_ws(b, key_end);
            (Some(start..key_end), skip_ws(b, colon + 1))
        } else {
            (None, start)
        };
        let value_end = skip_value(b, value_start);
        let next = skip_ws(b, value_end);
        out.push(Item {
            lead: at..start,
            key,
            value: value_start..value_end,
            trail: value_end..next,
        });
        if b.get(next) == Some(&b',') {
            at = next + 1;
        } else {
            return (out, next.min(b.len()));
        }
    }
}

/// The text of a (valid) string with its quotes, decoded; a lone surrogate escape or a byte that
/// is not UTF-8 becomes U+FFFD.
pub fn decode_string(raw: &[u8]) -> String {
    let inner = &raw[1..raw.len().saturating_sub(1).max(1)];
    if !inner.contains(&b'\\') {
        return String::from_utf8_lossy(inner).into_owned();
    }
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let hex = |at: usize| -> Option<u32> {
        let s = std::str::from_utf8(inner.get(at..at + 4)?).ok()?;
        u32::from_str_radix(s, 16).ok()
    };
    let mut i = 0;
    while i < inner.len() {
        if inner[i] != b'\\' {
            out.push(inner[i]);
            i += 1;
            continue;
        }
        let simple = match inner.get(i + 1) {
            Some(b'b') => Some(b'\x08'),
            Some(b'f') => Some(b'\x0c'),
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            Some(b'u') => None,
            Some(&c) => Some(c),
            None => Some(b'\\'),
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        let unit = hex(i + 2).unwrap_or(0xfffd);
        i += 6;
        let c = if (0xd800..0xdc00).contains(&unit) {
            match (inner.get(i..i + 2), hex(i + 2)) {
                (Some(b"\\u"), Some(low)) if (0xdc00..0xe000).contains(&low) => {
                    i += 6;
                    char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))
                }
                _ => None,
            }
        } else {
            char::from_u32(unit)
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.unwrap_or('\u{fffd}').encode_utf8(&mut buf).as_bytes());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the key `raw` (with quotes) is `name`, decoding it only when it holds an escape.
fn key_is(raw: &[u8], name: &str) -> bool {
    let inner = &raw[1..raw.len() - 1];
    if inner.contains(&b'\\') {
        decode_string(raw) == name
    } else {
        inner == name.as_bytes()
    }
}

/// The (valid) value at `range` as a `Value`, built without recursion. Strings are decoded as
/// [`decode_string`] does; numbers keep their spelling as serde_json's `arbitrary_precision` does.
/// Nesting deeper than `max_depth` is an error: where it starts.
pub fn to_value(b: &[u8], range: Range<usize>, max_depth: usize) -> Result<Value, usize> {
    enum Frame {
        Array(Vec<Value>),
        Object(Map<String, Value>, String),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = skip_ws(b, range.start);
    loop {
        // A value starts at `pos`.
        let mut done: Option<Value> = None;
        match b.get(pos) {
            Some(&open @ (b'{' | b'[')) => {
                let object = open == b'{';
                let close = if object { b'}' } else { b']' };
                let next = skip_ws(b, pos + 1);
                if b.get(next) == Some(&close) {
                    done = Some(if object {
                        Value::Object(Map::new())
                    } else {
                        Value::Array(Vec::new())
                    });
                    pos = next + 1;
                } else {
                    if stack.len() >= max_depth {
                        return Err(pos);
                    }
                    if object {
                        let end = scan_string(b, next).unwrap_or(b.len());
                        let key = decode_string(&b[next..end]);
                        stack.push(Frame::Object(Map::new(), key));
                        pos = skip_ws(b, skip_ws(b, end) + 1);
                    } else {
                        stack.push(Frame::Array(Vec::new()));
                        pos = next;
                    }
                }
            }
            _ => {
                let end = skip_value(b, pos);
                let raw = &b[pos..end];
                done = Some(match raw.first() {
                    Some(b'"') => Value::String(decode_string(raw)),
                    Some(b't') => Value::Bool(true),
                    Some(b'f') => Value::Bool(false),
                    Some(b'n') | None => Value::Null,
                    Some(_) => serde_json::from_slice(raw).unwrap_or(Value::Null),
                });
                pos = end;
            }
        }
        // Hand finished values to their containers, closing those that end here.
        while let Some(value) = done.take() {
            let Some(top) = stack.last_mut() else {
                return Ok(value);
            };
            match top {
                Frame::Array(items) => items.push(value),
                Frame::Object(map, key) => {
                    map.insert(std::mem::take(key), value);
                }
            }
            pos = skip_ws(b, pos);
            if b.get(pos) == Some(&b',') {
                pos = skip_ws(b, pos + 1);
                if let Some(Frame::Object(_, key)) = stack.last_mut() {
                    let end = scan_string(b, pos).unwrap_or(b.len());
                    *key = decode_string(&b[pos..end]);
                    pos = skip_ws(b, skip_ws(b, end) + 1);
                }
            } else {
                pos += 1;
                done = match stack.pop() {
                    Some(Frame::Array(items)) => Some(Value::Array(items)),
                    Some(Frame::Object(map, _)) => Some(Value::Object(map)),
                    None => None,
                };
            }
        }
        if pos >= b.len() {
            return Ok(Value::Null);
        }
    }
}

/// Where the (valid) document's value is, without the whitespace around it: only whitespace
/// follows it, so its end is found from the end, without going through it a second time.
fn root(b: &[u8]) -> Range<usize> {
    let start = skip_ws(b, 0);
    let end = b.iter().rposition(|c| !is_ws(*c)).map_or(start, |i| i + 1);
    start..end.max(start)
}

/// A provider's view of a (valid) document: when the document is an object and `keys` names the
/// top-level members the provider reads, an object of just those (in the file's order; the last
/// one of a repeated key, as JSON parsers do); otherwise the whole document.
/// Nesting deeper than [`MAX_VIEW_DEPTH`] inside the view is an error, as is a document that
/// is not JSON.
#[cfg(test)]
pub fn view(b: &[u8], keys: Option<&[String]>) -> Result<Value, SyntaxError> {
    scan(b)?.view(b, keys)
}

impl Scanned {
    /// [`view`] of the document this scan checked (`b`), without reading it again.
    pub fn view(&self, b: &[u8], keys: Option<&[String]>) -> Result<Value, SyntaxError> {
        let too_deep = |pos: usize| error_at(b, pos, Some(MAX_VIEW_DEPTH));
        let whole = root(b);
        let Some(keys) = keys.filter(|_| b.get(whole.start) == Some(&b'{')) else {
            return to_value(b, whole, MAX_VIEW_DEPTH).map_err(too_deep);
        };
        let mut out = Map::new();
        for (key, value) in &self.top {
            if let Some(name) = keys.iter().find(|k| key_is(&b[key.clone()], k)) {
                let value = to_value(b, value.clone(), MAX_VIEW_DEPTH - 1).map_err(too_deep)?;
                out.insert(name.clone(), value);
            }
        }
        Ok(Value::Object(out))
    }
}

/// How new values are written: indented by `indent` per level, or on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Style {
    pub indent: Option<Vec<u8>>,
}

/// The original document `b` (valid) with `new` written in: `new` is the whole document, or with
/// `keys`, the view of those top-level members ([`view`]), the rest of the document staying as
/// it is. Unchanged values keep their bytes; see the module doc.
pub fn rewrite(b: &[u8], new: &Value, keys: Option<&[String]>, style: &Style) -> Vec<u8> {
    let whole = root(b);
    let mut out = Vec::with_capacity(b.len() + 256);
    out.extend_from_slice(&b[..whole.start]);
    let writer = Writer { b, style };
    match (keys, new) {
        (Some(keys), Value::Object(map)) if b.get(whole.start) == Some(&b'{') => {
            writer.object(&mut out, whole.start, map, b"", Some(keys), 0);
        }
        _ => writer.value(&mut out, whole.clone(), new, b"", 0),
    }
    out.extend_from_slice(&b[whole.end..]);
    out
}

struct Writer<'a> {
    b: &'a [u8],
    style: &'a Style,
}

impl Writer<'_> {
    /// `new` in place of the value at `range` (`depth` levels down), whose line is indented by
    /// `base`.
    fn value(
        &self,
        out: &mut Vec<u8>,
        range: Range<usize>,
        new: &Value,
        base: &[u8],
        depth: usize,
    ) {
        let b = self.b;
        // `new` is no deeper than a view, so neither is an equal value; a deeper one differs.
        let room = MAX_VIEW_DEPTH.saturating_sub(depth);
        if to_value(b, range.clone(), room).is_ok_and(|old| old == *new) {
            out.extend_from_slice(&b[range]);
            return;
        }
        match (b.get(range.start), new) {
            (Some(b'{'), Value::Object(map)) if room > 0 => {
                self.object(out, range.start, map, base, None, depth);
            }
            (Some(b'['), Value::Array(list))
                if room > 0 && items(b, range.start).0.len() == list.len() =>
            {
                self.array(out, range.start, list, base, depth);
            }
            _ => self.fresh(out, new, base),
        }
    }

    /// `new` written anew, its later lines indented from `base`.
    fn fresh(&self, out: &mut Vec<u8>, new: &Value, base: &[u8]) {
        let Some(indent) = &self.style.indent else {
            out.extend_from_slice(&serde_json::to_vec(new).unwrap_or_default());
            return;
        };
        let mut text = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
        let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
        if serde::Serialize::serialize(new, &mut ser).is_err() {
            return;
        }
        for c in text {
            out.push(c);
            if c == b'\n' {
                out.extend_from_slice(base);
            }
        }
    }

    /// Elements one for one (same count): each kept or written anew.
    fn array(&self, out: &mut Vec<u8>, pos: usize, list: &[Value], base: &[u8], depth: usize) {
        let b = self.b;
        let (elements, close) = items(b, pos);
        out.push(b'[');
        for (i, (item, new)) in elements.iter().zip(list).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&b[item.lead.clone()]);
            let line = line_indent(&b[item.lead.clone()]).unwrap_or(base);
            self.value(out, item.value.clone(), new, line, depth + 1);
            out.extend_from_slice(&b[item.trail.clone()]);
        }
        if elements.is_empty() {
            out.extend_from_slice(&b[pos + 1..close]);
        }
        out.push(b']');
    }

    /// An object merged member by member: members of `map` keep their place and, when
    /// unchanged, their bytes; those `map` lacks are dropped (with `scope`, only among the keys
    /// it names: the others are kept whole); new ones are added at the end.
    fn object(
        &self,
        out: &mut Vec<u8>,
        pos: usize,
        map: &Map<String, Value>,
        base: &[u8],
        scope: Option<&[String]>,
        depth: usize,
    ) {
        let b = self.b;
        let (members, close) = items(b, pos);
        let keys: Vec<String> = members
            .iter()
            .map(|m| {
                m.key
                    .as_ref()
                    .map_or_else(String::new, |k| decode_string(&b[k.clone()]))
            })
            .collect();
        let closing = match members.last() {
            Some(last) => last.trail.clone(),
            None => pos + 1..close,
        };
        let multiline = members.iter().any(|m| b[m.lead.clone()].contains(&b'\n'))
            || b[closing.clone()].contains(&b'\n')
            || (members.is_empty() && self.style.indent.is_some());
        let unit: &[u8] = self.style.indent.as_deref().unwrap_or(b"  ");
        // New members are indented as the others are (by one level more than `base` when none
        // is), and led as the first member is when they come first, else as the last.
        let indented = |m: &Item| line_indent(&b[m.lead.clone()]).filter(|l| !l.is_empty());
        let member_indent: Vec<u8> = match members.iter().rev().find_map(indented) {
            Some(line) => line.to_vec(),
            None => [base, unit].concat(),
        };
        let lead_of = |m: Option<&Item>| -> Vec<u8> {
            match m {
                Some(m) if !multiline || indented(m).is_some() => b[m.lead.clone()].to_vec(),
                _ if multiline => [b"\n".as_slice(), &member_indent].concat(),
                _ => Vec::new(),
            }
        };
        let (lead_first, lead_rest) = (lead_of(members.first()), lead_of(members.last()));
        let colon: Vec<u8> = match members.last() {
            Some(m) => {
                let key_end = m.key.as_ref().map_or(m.value.start, |k| k.end);
                b[key_end..m.value.start].to_vec()
            }
            None if self.style.indent.is_some() => b": ".to_vec(),
            None => b":".to_vec(),
        };
        out.push(b'{');
        let mut written = 0usize;
        for (i, m) in members.iter().enumerate() {
            let name = &keys[i];
            let last = i + 1 == members.len();
            let in_scope = scope.is_none_or(|s| s.iter().any(|k| k == name));
            let repeated = keys[i + 1..].contains(name);
            let new = map.get(name.as_str());
            if in_scope && !repeated && new.is_none() {
                continue;
            }
            if written > 0 {
                out.push(b',');
            }
            written += 1;
            out.extend_from_slice(&b[m.lead.start..m.value.start]);
            match new {
                Some(v) if in_scope && !repeated => {
                    let line = line_indent(&b[m.lead.clone()]).unwrap_or(base);
                    self.value(out, m.value.clone(), v, line, depth + 1);
                }
                _ => out.extend_from_slice(&b[m.value.clone()]),
            }
            if !last {
                out.extend_from_slice(&b[m.trail.clone()]);
            }
        }
        for (name, v) in map {
            if keys.contains(name) {
                continue;
            }
            if written > 0 {
                out.push(b',');
                out.extend_from_slice(&lead_rest);
            } else {
                out.extend_from_slice(&lead_first);
            }
            written += 1;
            out.extend_from_slice(&serde_json::to_vec(name).unwrap_or_default());
            out.extend_from_slice(&colon);
            self.fresh(out, v, &member_indent);
        }
        if members.is_empty() && multiline && written > 0 {
            out.push(b'\n');
            out.extend_from_slice(base);
        } else {
            out.extend_from_slice(&b[closing]);
        }
        out.push(b'}');
    }
}

/// The indent of the line a member starts on, when whitespace before it holds a line break.
fn line_indent(lead: &[u8]) -> Option<&[u8]> {
    lead.iter()
        .rposition(|c| *c == b'\n')
        .map(|i| &lead[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    const COMPACT: Style = Style { indent: None };

    #[test]
    fn validates_what_json_parsers_accept_and_refuses_the_rest() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
        for good in [
            "{}",
            " [1, -0, 1E5, 1.50, 1e400, -2.5e-3] ",
            r#"{"a":"\ud800","b":"\/\u00e9","c":[true,false,null]}"#,
            deep.as_str(),
        ] {
            assert_eq!(validate(good.as_bytes()), Ok(()), "{good}");
        }
        assert_eq!(validate(b"{\"a\":\"\xff\xfe\"}"), Ok(()));
        for (bad, line, column) in [
            ("{\n  \"a\": ,}", 2, 8),
            ("{\"a\":1,}", 1, 8),
            ("[01]", 1, 3),
            ("[1.]", 1, 4),
            ("{\"a\" 1}", 1, 6),
            ("[\"\\x\"]", 1, 4),
            ("[\"a\tb\"]", 1, 4),
            ("{} {}", 1, 4),
            ("[tru]", 1, 2),
            ("{\"a\":1", 1, 7),
            ("", 1, 1),
        ] {
            let e = validate(bad.as_bytes()).unwrap_err();
            assert_eq!(
                (e.line, e.column, e.too_deep),
                (line, column, None),
                "{bad}"
            );
        }
        let too_deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(
            validate(too_deep.as_bytes()).unwrap_err().too_deep,
            Some(MAX_DEPTH)
        );
    }

    #[test]
    fn the_first_special_byte_is_found_eight_at_a_time_as_one_at_a_time() {
        let slow = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&k| matches!(b[k], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(b.len())
        };
        // A special byte (and bytes next to the ones that count, which a borrow could reach) at
        // every place of a 19-byte buffer over plain, high and special neighbours, with a second
        // one after it, asked from before, at and after it.
        for fill in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
            for special in [b'"', b'\\', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x5b, 0x5d] {
                for at in 0..19 {
                    for second in [at + 1, at + 8] {
                        let mut b = vec![fill; 19];
                        b[at] = special;
                        if second < b.len() {
                            b[second] = b'"';
                        }
                        for start in [0, 1, 7, 8, at, at + 1] {
                            assert_eq!(
                                next_special(&b, start),
                                slow(&b, start),
                                "{b:?} from {start}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The root found from the end is the value a walk through the document finds.
    /// Where a container ends, found by following every byte in order: the reference for
    /// [`container_end`]'s walk over flagged bytes only.
    fn container_end_byte_by_byte(b: &[u8], pos: usize) -> Option<usize> {
        let mut state = Brackets::default();
        for (k, &c) in b.iter().enumerate().skip(pos) {
            if state.take(c).ok()? {
                return Some(k + 1);
            }
        }
        None
    }

    #[test]
    fn a_container_ends_where_a_walk_byte_by_byte_says_wherever_the_blocks_fall() {
        // Strings with escaped quotes and backslashes, brackets inside strings, and runs of
        // backslashes, shifted by every offset so each lands on and across a 16-byte boundary.
        let pieces = [
            r#"{"a":"x\"}","b":[1,{"c":"]\\"}],"d":"\\\\\"["}"#,
            r#"[["\\"],"\"",{},"a\\\"b",[{"k":"\u005d"}]]"#,
            r#"{"p":"\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\\","q":"\"\"\"\"\"\"\"\"\"\""}"#,
            // No backslash: blocks taken whole, strings told apart by their quotes alone.
            r#"{"a":"]]}}","b":[[["x"]],{"c":"[{"}],"d":[],"e":"{{{{{{{{{{{{{{{{{{{{","f":"]"}"#,
            r#"[[[[[[[[[[[[[[[[[[[["]]]]]]]]]]]]",[]]]]]]]]]]]]]]]]]]]]]"#,
        ];
        for piece in pieces {
            for pad in 0..40 {
                let text = format!("{}{piece} ", " ".repeat(pad));
                let b = text.as_bytes();
                let end = container_end_byte_by_byte(b, pad);
                assert_eq!(end, Some(pad + piece.len()), "{text}");
                assert_eq!(container_end(b, pad), end, "{text}");
                // Cut off anywhere inside, it never closes.
                for cut in pad + 1..pad + piece.len() {
                    assert_eq!(container_end(&b[..cut], pad), None, "{}", &text[..cut]);
                }
            }
        }
        // A backslash outside a string is not JSON.
        assert_eq!(container_end(br#"[1,\"]"#, 0), None);
    }

    #[test]
    fn a_skim_reads_the_members_asked_for_as_a_scan_does() {
        let login = keys(&["claudeAiOauth"]);
        let mut big = String::from(r#"{"projects":["#);
        for n in 0..500 {
            big.push_str(&format!(
                r#"{{"path":"/src/p-{n}\\\"]","tools":["Bash","Edit"],"cost":{n}.25,"ok":true}},"#
            ));
        }
        big.push_str(r#"{}],"claudeAiOauth":{"accessToken":"a\"b","expiresAt":5},"z":null}"#);
        for text in [
            big.as_str(),
            r#"{"claudeAiOauth":{"accessToken":"a"}}"#,
            r#"  {"x":[{"}":"{"}],"claudeAiOauth":{"accessToken":"a"},"claudeAiOauth":{"accessToken":"b"}} "#,
            r#"{"a":1,"b":-2.5e3,"c":"s","d":false,"e":null}"#,
            "{}",
            "[1,2]",
        ] {
            let b = text.as_bytes();
            let by_scan = scan(b).unwrap().view(b, Some(&login)).unwrap();
            let by_skim = skim(b, Some(&login))
                .unwrap()
                .view(b, Some(&login))
                .unwrap();
            assert_eq!(by_skim, by_scan, "{text}");
        }
    }

    #[test]
    fn a_skim_refuses_what_a_scan_refuses_except_inside_members_it_does_not_read() {
        let login = keys(&["claudeAiOauth"]);
        // Cut off, unbalanced, not an object, or wrong in the login: the error scan gives.
        let good = r#"{"x":[1,{"y":"]"}],"claudeAiOauth":{"accessToken":"a","expiresAt":5}}"#;
        let mut bad: Vec<String> = (0..good.len()).map(|cut| good[..cut].to_string()).collect();
        bad.extend(
            [
                r#"{"x":[1}],"claudeAiOauth":{"accessToken":"a"}}"#,
                r#"{"x":1,"claudeAiOauth":{"accessToken":"a",}}"#,
                r#"{"claudeAiOauth":{"accessToken":"a"}} x"#,
                r#"{"claudeAiOauth":{"accessToken":"a"},}"#,
                r#"{"x":01,"claudeAiOauth":{}}"#,
                r#"{"x" 1}"#,
                "[1,]",
            ]
            .map(String::from),
        );
        for text in &bad {
            let b = text.as_bytes();
            assert_eq!(
                skim(b, Some(&login)).map(|_| ()),
                scan(b).map(|_| ()),
                "{text}"
            );
            assert!(skim(b, Some(&login)).is_err(), "{text}");
        }
        // Malformed inside a member no one reads: skipped here, refused by the scan before a
        // write.
        for text in [
            r#"{"x":[01,tru,"a	b"],"claudeAiOauth":{"accessToken":"a"}}"#,
            r#"{"x":{"k" 1},"claudeAiOauth":{"accessToken":"a"}}"#,
        ] {
            let b = text.as_bytes();
            assert!(scan(b).is_err(), "{text}");
            let view = skim(b, Some(&login))
                .unwrap()
                .view(b, Some(&login))
                .unwrap();
            assert_eq!(view, json!({"claudeAiOauth": {"accessToken": "a"}}));
        }
        // Without keys, the whole document is read, so all of it is checked.
        assert!(skim(br#"{"x":[01]}"#, None).is_err());
    }

    #[test]
    fn the_root_is_found_from_the_end() {
        for text in [
            "{}",
            " \n\t{ \"a\" : [1, {\"b\": \"}\"}] }\r\n ",
            "[]  ",
            "  \"s\"",
            "-1.5e3\n",
            "true",
            " null ",
        ] {
            let b = text.as_bytes();
            validate(b).unwrap();
            let start = skip_ws(b, 0);
            assert_eq!(root(b), start..skip_value(b, start), "{text:?}");
        }
    }

    #[test]
    fn one_scan_finds_the_members_of_the_root() {
        for text in [
            r#"{}"#,
            r#" { "a" : 1 , "b":{"c":[1,{}]},"d":[] ,"e":{}, "f":"x\"}" } "#,
            r#"{"k":"a long string with \\ and \" and more than eight bytes","n":-0}"#,
            r#"[{"a":1}]"#,
            r#""just a string""#,
        ] {
            let b = text.as_bytes();
            let scanned = scan(b).unwrap();
            let start = root(b).start;
            let want: Vec<(Range<usize>, Range<usize>)> = if b[start] == b'{' {
                items(b, start)
                    .0
                    .into_iter()
                    .map(|m| (m.key.unwrap(), m.value))
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(scanned.top, want, "{text}");
        }
    }

    #[test]
    fn decodes_strings_lossily_and_never_fails() {
        for (raw, text) in [
            (r#""plain""#, "plain"),
            (r#""\u00e9\/\n\"""#, "é/\n\""),
            (r#""\ud83d\udd11""#, "🔑"),
            (r#""\ud800x""#, "\u{fffd}x"),
            (r#""\udc00""#, "\u{fffd}"),
        ] {
            assert_eq!(decode_string(raw.as_bytes()), text, "{raw}");
        }
        assert_eq!(decode_string(b"\"a\xffb\""), "a\u{fffd}b");
    }

    #[test]
    fn values_are_built_without_recursion() {
        let text = r#" {"a":[1,{"b":null},[]],"c":{},"d":"\u00e9","a":2} "#;
        assert_eq!(
            to_value(text.as_bytes(), root(text.as_bytes()), MAX_DEPTH).unwrap(),
            json!({"a": 2, "c": {}, "d": "é"})
        );
        let deep = format!("{}1{}", "[".repeat(3000), "]".repeat(3000));
        let v = to_value(deep.as_bytes(), root(deep.as_bytes()), MAX_DEPTH).unwrap();
        let mut here = &v;
        let mut depth = 0;
        while let Value::Array(items) = here {
            here = &items[0];
            depth += 1;
        }
        assert_eq!(depth, 3000);
        // Drop it a level at a time, so the test's own stack is not what is measured.
        let mut v = v;
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn a_view_holds_only_the_keys_asked_for() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let text = format!(r#"{{"big":{deep},"x":"\ud800","o":{{"t":"a","n":1.50}},"z":1}}"#);
        let v = view(text.as_bytes(), Some(&keys(&["o", "missing"]))).unwrap();
        let want: Value = serde_json::from_str(r#"{"o":{"t":"a","n":1.50}}"#).unwrap();
        assert_eq!(v, want);
        assert_eq!(view(b"[1]", Some(&keys(&["o"]))).unwrap(), json!([1]));
    }

    #[test]
    fn unchanged_values_keep_their_bytes() {
        let text = "{\"n\": [1E5, 1.50, -0, 1e400], \"s\": \"\\u00e9\\/\", \"l\": \"\\ud800\",\n \"o\": {\"t\":  \"a\" , \"k\":1}, \"b\": \"@\"}\n";
        // `@` stands for a byte that is not UTF-8, in an unknown string.
        let raw = |text: &str| -> Vec<u8> {
            text.bytes()
                .map(|c| if c == b'@' { 0xff } else { c })
                .collect()
        };
        let b = raw(text);
        let b = b.as_slice();
        assert!(std::str::from_utf8(b).is_err());
        let all = view(b, None).unwrap();
        assert_eq!(rewrite(b, &all, None, &COMPACT), b);
        let mut changed = all.clone();
        changed["o"]["t"] = json!("b");
        let want = raw(&text.replace("\"t\":  \"a\"", "\"t\":  \"b\""));
        assert_eq!(rewrite(b, &changed, None, &COMPACT), want);
        let mut v = view(b, Some(&keys(&["o"]))).unwrap();
        v["o"]["new"] = json!([1, {"x": 2}]);
        let want = raw(&text.replace("\"k\":1}", "\"k\":1, \"new\":[1,{\"x\":2}]}"));
        assert_eq!(rewrite(b, &v, Some(&keys(&["o"])), &COMPACT), want);
    }

    #[test]
    fn the_deepest_documents_allowed_are_read_and_rewritten_on_a_small_stack() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let text = format!(
            "{{\"o\":{{\"t\":\"a\",\"deep\":{}}},\"other\":{}}}",
            nest(MAX_VIEW_DEPTH - 2),
            nest(MAX_DEPTH - 1)
        );
        let run = move || {
            let b = text.as_bytes();
            assert_eq!(validate(b), Ok(()));
            let k = keys(&["o"]);
            let mut v = view(b, Some(&k)).unwrap();
            v["o"]["t"] = json!("b");
            let out = rewrite(b, &v, Some(&k), &COMPACT);
            assert_eq!(out, text.replace("\"a\"", "\"b\"").as_bytes());
            let e = view(b, Some(&keys(&["other"]))).unwrap_err();
            assert_eq!(e.too_deep, Some(MAX_VIEW_DEPTH));
        };
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn new_members_follow_the_files_layout() {
        let two = Style {
            indent: Some(b"  ".to_vec()),
        };
        let text = "{\n  \"keep\": 1E5,\n  \"o\": {\n    \"t\": \"a\"\n  }\n}\n";
        let mut v = view(text.as_bytes(), Some(&keys(&["o", "p"]))).unwrap();
        v["o"]["u"] = json!({"x": [1]});
        v["p"] = json!({});
        v["o"]["t"] = json!("b");
        assert_eq!(
            String::from_utf8(rewrite(text.as_bytes(), &v, Some(&keys(&["o", "p"])), &two))
                .unwrap(),
            "{\n  \"keep\": 1E5,\n  \"o\": {\n    \"t\": \"b\",\n    \"u\": {\n      \"x\": [\n        1\n      ]\n    }\n  },\n  \"p\": {}\n}\n"
        );
        let empty = "{\n  \"o\": {}\n}";
        let mut v = view(empty.as_bytes(), None).unwrap();
        v["o"]["a"] = json!(1);
        assert_eq!(
            String::from_utf8(rewrite(empty.as_bytes(), &v, None, &two)).unwrap(),
            "{\n  \"o\": {\n    \"a\": 1\n  }\n}"
        );
        let mut v = view(b"{}", None).unwrap();
        v["a"] = json!(1);
        assert_eq!(rewrite(b"{}", &v, None, &COMPACT), b"{\"a\":1}");
        let v = json!({"b": 2});
        assert_eq!(
            rewrite(b"{\"a\":1, \"c\":3}", &v, None, &COMPACT),
            b"{\"b\":2}"
        );
    }
}
