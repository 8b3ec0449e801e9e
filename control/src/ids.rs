//! Identifiers, random MACs and timestamps, shaped like Docker's.
//!
//! - Network, endpoint and sandbox IDs are 64 lowercase hex characters from 32 random bytes
//!   (Docker's `stringid.GenerateRandomID`), never all-decimal in their first 12 characters,
//!   so a short ID is never mistaken for a number.
//! - Random MACs are unicast and locally administered (`b0 &= 0xfe; b0 |= 0x02`), as
//!   Docker's `netutils.GenerateRandomMAC`.
//! - Timestamps are RFC 3339 with nanoseconds in UTC, as Docker prints `Created`.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use uvlan_dataplane::wire::MacAddr;

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)` through the `getrandom` crate; it
/// never blocks once the pool is initialised, which it is long before a daemon starts).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(io::Error::from)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The bytes of a hex string (either case); `None` if it is not hex or has an odd length.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| match p {
            [h, l] => Some(digit(*h)? << 4 | digit(*l)?),
            _ => None,
        })
        .collect()
}

/// True if `id` is acceptable as a Docker-style ID: 64 lowercase hex characters whose first
/// 12 are not all decimal digits.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 64
        && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && !id.bytes().take(12).all(|b| b.is_ascii_digit())
}

/// A new random 64-hex ID (see the module docs).
pub fn new_id() -> io::Result<String> {
    loop {
        let mut b = [0u8; 32];
        random_bytes(&mut b)?;
        let id = hex(&b);
        if is_valid_id(&id) {
            return Ok(id);
        }
    }
}

/// The first 12 characters of an ID (Docker's `TruncateID`).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Turns 6 random bytes into a unicast, locally administered MAC.
pub fn mac_from_random(mut b: [u8; 6]) -> MacAddr {
    b[0] &= 0xfe;
    b[0] |= 0x02;
    MacAddr(b)
}

/// A new random unicast, locally administered MAC.
pub fn random_mac() -> io::Result<MacAddr> {
    let mut b = [0u8; 6];
    random_bytes(&mut b)?;
    Ok(mac_from_random(b))
}

/// `n` random bytes as hex (e.g. 4 bytes for the `uvlan-<8hex>` namespace names).
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut b = vec![0u8; n];
    random_bytes(&mut b)?;
    Ok(hex(&b))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 with nanoseconds, UTC, for `secs`/`nanos` since the Unix epoch
/// (`2026-08-20T10:11:12.123456789Z`).
pub fn rfc3339_nanos(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        tod / 3600,
        (tod / 60) % 60,
        tod % 60
    )
}

/// The current time as [`rfc3339_nanos`] text.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_nanos(
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        now.subsec_nanos(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_not_numeric_prefixes() {
        for _ in 0..200 {
            let id = new_id().unwrap();
            assert!(is_valid_id(&id), "{id}");
        }
        assert_ne!(new_id().unwrap(), new_id().unwrap());
        assert!(!is_valid_id(&format!(
            "{}{}",
            "1".repeat(12),
            "a".repeat(52)
        )));
        assert!(!is_valid_id(&"A".repeat(64)));
        assert!(!is_valid_id("abc"));
        assert!(is_valid_id(&format!(
            "{}a{}",
            "1".repeat(11),
            "0".repeat(52)
        )));
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn random_bytes_fill_the_whole_buffer() {
        // A large buffer: every part of it, the tail included, is written.
        let mut big = vec![0u8; 1 << 20];
        random_bytes(&mut big).unwrap();
        for chunk in big.chunks(32) {
            assert!(chunk.iter().any(|b| *b != 0), "an all-zero 32-byte run");
        }
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        random_bytes(&mut []).unwrap();
    }

    #[test]
    fn random_macs_are_local_unicast() {
        assert_eq!(mac_from_random([0xff; 6]).0[0], 0xfe);
        assert_eq!(mac_from_random([0x00; 6]).0[0], 0x02);
        for _ in 0..100 {
            let m = random_mac().unwrap();
            assert!(m.is_valid_unicast() && m.is_local_admin(), "{m}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_nanos(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_787_220_672, 123_456_789),
            "2026-08-20T10:11:12.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400, 5),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert!(now_rfc3339().ends_with('Z'));
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex(""), Some(vec![]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&all)), Some(all));
    }
}
