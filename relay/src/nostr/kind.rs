//! Kind ranges (NIP-01): how the relay stores an event depends only on its kind.

/// How NIP-01 asks a relay to keep events of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindClass {
    /// Every event is stored.
    Regular,
    /// Only the newest event per (pubkey, kind) is kept.
    Replaceable,
    /// Delivered to live subscribers, never stored.
    Ephemeral,
    /// Only the newest event per (pubkey, kind, `d` tag) is kept.
    Addressable,
}

impl KindClass {
    /// Classifies a kind. Kinds NIP-01 leaves undefined are stored like regular ones.
    pub fn of(kind: u16) -> Self {
        match kind {
            0 | 3 | 10_000..=19_999 => Self::Replaceable,
            20_000..=29_999 => Self::Ephemeral,
            30_000..=39_999 => Self::Addressable,
            _ => Self::Regular,
        }
    }

    /// A short lowercase name, used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::Replaceable => "replaceable",
            Self::Ephemeral => "ephemeral",
            Self::Addressable => "addressable",
        }
    }
}

/// The kind of a NIP-09 deletion request.
pub const DELETION: u16 = 5;
/// NIP-62 requests to vanish.
pub const VANISH: u16 = 62;
/// NIP-59 gift wraps.
pub const GIFT_WRAP: u16 = 1059;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_nip01() {
        assert_eq!(KindClass::of(0), KindClass::Replaceable);
        assert_eq!(KindClass::of(1), KindClass::Regular);
        assert_eq!(KindClass::of(3), KindClass::Replaceable);
        assert_eq!(KindClass::of(9_999), KindClass::Regular);
        assert_eq!(KindClass::of(10_000), KindClass::Replaceable);
        assert_eq!(KindClass::of(19_999), KindClass::Replaceable);
        assert_eq!(KindClass::of(20_000), KindClass::Ephemeral);
        assert_eq!(KindClass::of(29_999), KindClass::Ephemeral);
        assert_eq!(KindClass::of(30_000), KindClass::Addressable);
        assert_eq!(KindClass::of(39_999), KindClass::Addressable);
        assert_eq!(KindClass::of(40_000), KindClass::Regular);
        assert_eq!(KindClass::of(65_535), KindClass::Regular);
    }
}
