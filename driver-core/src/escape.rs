//! Unambiguous text for file names that may not be UTF-8 (`layerctl diff`'s lines).
//!
//! The rule is GNU `ls -b` / `--quoting-style=escape` (also what GNU tar prints for odd
//! names): printable characters stay as they are (non-ASCII UTF-8 included); a backslash
//! becomes `\\`; `\a \b \t \n \v \f \r` their C escapes; every other control character
//! and every byte that is not part of valid UTF-8 a three-digit octal escape of each of
//! its bytes (`\377` for 0xff). Since a backslash is always escaped, the text decodes
//! back to exactly one byte string: two different names never print the same (where
//! `Path::display` prints U+FFFD for any bad byte).

use std::fmt::Write as _;

/// `bytes` as escaped text (see the module doc). Spaces are not escaped: a caller that
/// prints one name per line (after a fixed prefix) needs no delimiter quoting.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    octal(&mut out, c.encode_utf8(&mut buf).as_bytes());
                }
                c => out.push(c),
            }
        }
        octal(&mut out, chunk.invalid());
    }
    out
}

/// A path as [`escape_bytes`] text.
pub fn escape_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    escape_bytes(path.as_os_str().as_bytes())
}

fn octal(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\{b:03o}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let cases: &[(&[u8], &str)] = &[
            (b"/etc/hosts", "/etc/hosts"),
            (b"/a b", "/a b"),
            (b"/x\xff", "/x\\377"),
            (b"/x\xef\xbf\xbd", "/x\u{fffd}"),
            (b"/back\\slash", "/back\\\\slash"),
            (b"/x\\377", "/x\\\\377"),
            (b"/two\nlines\t\r", "/two\\nlines\\t\\r"),
            (b"/\x01\x7f", "/\\001\\177"),
            ("/caf\u{e9}".as_bytes(), "/caf\u{e9}"),
            ("/c1\u{85}".as_bytes(), "/c1\\302\\205"),
            (b"/\xc3", "/\\303"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape_bytes(raw), *want, "{raw:?}");
        }
        // Names that `Path::display` merges stay apart.
        assert_ne!(escape_bytes(b"/x\xff"), escape_bytes(b"/x\xfe"));
        assert_ne!(
            escape_bytes(b"/x\xff"),
            escape_bytes("/x\u{fffd}".as_bytes())
        );
    }
}
