//! A position in Postgres's write-ahead log: what a read replica has replayed, and what a
//! write needs a replica to have replayed before it may answer a read of what it changed
//! (API.md promise 8).

use std::fmt;

/// A WAL position (`pg_lsn`), a byte offset that only grows. `Lsn(0)` is "before
/// anything": every replica has replayed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Sixteen hex digits: fixed width, so Lua compares two of them as strings.
    pub fn hex(self) -> String {
        format!("{:016X}", self.0)
    }

    /// The inverse of [`Lsn::hex`] (any width).
    pub fn parse_hex(text: &str) -> Option<Lsn> {
        u64::from_str_radix(text, 16).ok().map(Lsn)
    }
}

/// Postgres's own form, `16/B374D848`.
impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_fixed_width_and_orders_as_the_numbers_do() {
        let (low, high) = (Lsn(0x16_B374_D848), Lsn(0x1_0000_0000_0000));
        assert_eq!(low.hex().len(), 16);
        assert!(low.hex() < high.hex());
        assert_eq!(Lsn::parse_hex(&high.hex()), Some(high));
        assert_eq!(low.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse_hex("zz"), None);
    }
}
