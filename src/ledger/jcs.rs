//! Checks that bytes are exactly RFC 8785 (JCS) canonical JSON by walking
//! them once, without building a value: the hot path of `verify`, which
//! checks every entry. Canonicalising with the JCS crate and comparing is the
//! reference; a property test holds the two equal.
//!
//! What canonical means here (RFC 8785 §3.2): no white space outside
//! strings; object members sorted by the UTF-16 code units of their names,
//! no duplicates; strings with only the escapes `\"` `\\` `\b` `\f` `\n` `\r`
//! `\t` and `\u00xx` (lowercase) for the other control characters, every
//! other character literal; numbers as ECMAScript prints them.

use std::cmp::Ordering;

/// Deepest nesting accepted (serde_json's own limit is 128).
const DEPTH_MAX: usize = 128;

/// Whether `bytes` are the RFC 8785 serialisation of the JSON value they hold.
pub fn is_canonical(bytes: &[u8]) -> bool {
    if std::str::from_utf8(bytes).is_err() {
        return false;
    }
    let mut walker = Walker { bytes, at: 0 };
    walker.value(0) && walker.at == bytes.len()
}

struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Walker<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > DEPTH_MAX {
            return false;
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<&'a [u8]> = None;
        loop {
            let Some(name) = self.string() else {
                return false;
            };
            if let Some(prev) = previous
                && utf16_cmp(prev, name) != Ordering::Less
            {
                return false; // out of order, or a duplicate name
            }
            previous = Some(name);
            if !self.eat(b':') || !self.value(depth + 1) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth + 1) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// A canonical string; returns its raw content (between the quotes).
    fn string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        loop {
            let byte = self.peek()?;
            self.at += 1;
            match byte {
                b'"' => return Some(&self.bytes[start..self.at - 1]),
                0x00..=0x1f => return None, // controls must be escaped
                b'\\' => {
                    let escape = self.peek()?;
                    self.at += 1;
                    match escape {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            // Only controls without a short form, lowercase hex.
                            let hex = self.bytes.get(self.at..self.at + 4)?;
                            self.at += 4;
                            if &hex[..2] != b"00" {
                                return None;
                            }
                            let lower = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
                            if !lower(hex[2]) || !lower(hex[3]) {
                                return None;
                            }
                            let code = u8::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16)
                                .ok()?;
                            if code >= 0x20 || matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                        }
                        _ => return None,
                    }
                }
                _ => {}
            }
        }
    }

    fn number(&mut self) -> bool {
        let start = self.at;
        self.eat(b'-');
        let int_start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let int_digits = self.at - int_start;
        if int_digits == 0 {
            return false;
        }
        let mut plain_integer = true;
        if self.eat(b'.') {
            plain_integer = false;
            let frac = self.at;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
            if self.at == frac {
                return false;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            plain_integer = false;
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            let exp = self.at;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
            if self.at == exp {
                return false;
            }
        }
        let token = &self.bytes[start..self.at];
        if plain_integer && int_digits <= 15 {
            // Exactly representable: canonical unless a leading zero or -0.
            let digits = &self.bytes[int_start..self.at];
            return !(digits.len() > 1 && digits[0] == b'0') && token != b"-0";
        }
        // The general case: format the value as ECMAScript does and compare.
        let Ok(text) = std::str::from_utf8(token) else {
            return false;
        };
        let Ok(value) = text.parse::<f64>() else {
            return false;
        };
        value.is_finite()
            && serde_json_canonicalizer::to_string(&value).is_ok_and(|c| c.as_bytes() == token)
    }
}

/// Decodes the characters of a canonical string's raw content.
fn chars(raw: &[u8]) -> impl Iterator<Item = char> + '_ {
    let text = std::str::from_utf8(raw).unwrap_or("");
    let mut iter = text.chars();
    std::iter::from_fn(move || {
        let c = iter.next()?;
        if c != '\\' {
            return Some(c);
        }
        Some(match iter.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hex: String = iter.by_ref().take(4).collect();
                char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
            }
            other => other,
        })
    })
}

/// Orders two raw string contents by UTF-16 code units (RFC 8785 §3.2.3).
fn utf16_cmp(a: &[u8], b: &[u8]) -> Ordering {
    if a.is_ascii() && b.is_ascii() && !a.contains(&b'\\') && !b.contains(&b'\\') {
        return a.cmp(b); // ASCII without escapes: byte order is code-unit order
    }
    let units = |raw| {
        chars(raw).flat_map(|c| {
            let mut buf = [0u16; 2];
            c.encode_utf16(&mut buf).to_vec()
        })
    };
    units(a).cmp(units(b))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// The reference: canonicalise with the JCS crate and compare.
    fn by_crate(bytes: &[u8]) -> bool {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return false;
        };
        serde_json_canonicalizer::to_vec(&value).is_ok_and(|c| c == bytes)
    }

    #[test]
    fn examples() {
        for (text, canonical) in [
            (r#"{"a":1,"b":[true,false,null],"c":"x"}"#, true),
            (r#"{"b":1,"a":2}"#, false),
            (r#"{"a":1,"a":2}"#, false),
            (r#"{"a": 1}"#, false),
            (r#"{"a":1.0}"#, false),
            (r#"{"a":1e21}"#, false),
            (r#"{"a":1e+21}"#, true),
            (r#"{"a":-0}"#, false),
            (r#"{"a":007}"#, false),
            (r#"{"a":0.000001,"b":1e-7}"#, true),
            (r#"{"a":"\u0041"}"#, false),
            (r#"{"a":"\u001F"}"#, false),
            (r#"{"a":"\u001f\n\"\\"}"#, true),
            (r#"{"a":"\/"}"#, false),
            ("{\"a\":\"\u{7f}\u{2028}é\"}", true),
            (r#"{"\u000a":1,"a":2}"#, false),
            (r#"{"\n":1,"a":2}"#, true),
            (r#"{"€":1,"😀":2}"#, true),
            // U+FF61 comes before U+1F600 by code point but after its
            // UTF-16 surrogate 0xD83D, and JCS sorts by UTF-16.
            (r#"{"😀":1,"｡":2}"#, true),
            (r#"{"｡":2,"😀":1}"#, false),
            (r#"[1,2,]"#, false),
            (r#"{}x"#, false),
        ] {
            assert_eq!(is_canonical(text.as_bytes()), canonical, "{text}");
            assert_eq!(
                by_crate(text.as_bytes()),
                canonical,
                "reference disagrees on {text}"
            );
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}|[\\x00-\\x1f\"\\\\\u{7f}\u{2028}\u{1F600}é]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    "\\PC{0,6}|[\\x00-\\x1f\u{1F600}€a-c]{0,3}",
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn canonical_bytes_pass(value in json()) {
            let bytes = serde_json_canonicalizer::to_vec(&value).unwrap();
            prop_assert!(is_canonical(&bytes), "{}", String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn any_edit_is_judged_as_the_reference_judges_it(value in json(), at in any::<prop::sample::Index>(), edit in 0u8..4, byte in any::<u8>()) {
            let mut bytes = serde_json_canonicalizer::to_vec(&value).unwrap();
            let i = at.index(bytes.len() + 1);
            match edit {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                2 if i < bytes.len() => bytes[i] = byte,
                _ => bytes.insert(i, b' '),
            }
            prop_assert_eq!(is_canonical(&bytes), by_crate(&bytes), "{}", String::from_utf8_lossy(&bytes));
        }
    }
}
