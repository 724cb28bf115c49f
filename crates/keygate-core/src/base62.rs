//! Base62 (`0-9A-Za-z`): compact, URL- and shell-safe, and its ASCII order is its numeric order,
//! so fixed-width encodings sort like the numbers they encode.

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether every byte of `s` is a base62 digit.
pub fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Writes `value` as exactly `out.len()` base62 digits, most significant first (zero-padded;
/// higher digits that do not fit are dropped, so callers size `out` for their range).
pub fn encode_fixed(mut value: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
}

/// Appends `len` base62 characters drawn uniformly from the operating system's randomness.
///
/// Bytes are drawn in batches and rejection-sampled (only values below 248 = 4 × 62 are used),
/// so every character is uniform; a modulo of raw bytes would favour the first eight.
pub fn push_random(out: &mut String, len: usize) -> Result<(), getrandom::Error> {
    let mut pushed = 0;
    let mut buf = [0u8; 64];
    while pushed < len {
        getrandom::fill(&mut buf)?;
        for &byte in &buf {
            if byte < 248 && pushed < len {
                out.push(ALPHABET[(byte % 62) as usize] as char);
                pushed += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_encoding_sorts_like_numbers() {
        let mut a = [0u8; 6];
        let mut b = [0u8; 6];
        encode_fixed(61, &mut a);
        encode_fixed(62, &mut b);
        assert_eq!(&a, b"00000z");
        assert_eq!(&b, b"000010");
        assert!(a < b);
        encode_fixed(u64::from(u32::MAX), &mut a);
        assert_eq!(&a, b"4gfFC3");
    }

    #[test]
    fn random_strings_have_the_asked_length_and_alphabet() {
        let mut s = String::new();
        push_random(&mut s, 1000).unwrap();
        assert_eq!(s.len(), 1000);
        assert!(is_base62(&s));
        // 1000 draws from 62 symbols: every symbol appearing is overwhelmingly likely, and a
        // generator stuck on a subset (a classic modulo or shift bug) fails this.
        let distinct: std::collections::HashSet<char> = s.chars().collect();
        assert!(
            distinct.len() > 55,
            "only {} distinct symbols",
            distinct.len()
        );
    }
}
