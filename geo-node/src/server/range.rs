//! `Range` requests on `retrieve`: one byte range, parsed as RFC 9110 says, and what it selects
//! of a blob of known size.

/// One byte range of a `Range` request, as asked (RFC 9110 §14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `bytes=N-` or `bytes=N-M`.
    From {
        /// First byte.
        start: u64,
        /// Last byte (inclusive), `None` for "to the end".
        end: Option<u64>,
    },
    /// `bytes=-K`: the last K bytes.
    Suffix(u64),
}

/// What a [`ByteRange`] selects of a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    /// The whole blob (`200`).
    Whole,
    /// Bytes `start..=end` of `total` (`206`).
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
        /// The whole blob's size.
        total: u64,
    },
    /// Nothing of it (`416`).
    Unsatisfiable,
}

impl ByteRange {
    /// The range of a `Range` header value; `None` for anything but one well-formed byte range
    /// (the header is then ignored).
    pub(crate) fn parse(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        if a.is_empty() {
            return number(b).map(ByteRange::Suffix);
        }
        let start = number(a)?;
        let end = if b.is_empty() { None } else { Some(number(b)?) };
        if end.is_some_and(|e| e < start) {
            return None;
        }
        Some(ByteRange::From { start, end })
    }

    /// Where reading starts, as far as the request alone says (a suffix needs the size).
    pub(crate) fn offset(self) -> u64 {
        match self {
            ByteRange::From { start, .. } => start,
            ByteRange::Suffix(_) => 0,
        }
    }

    /// What the range selects of a blob of `total` bytes.
    pub(crate) fn resolve(self, total: u64) -> Span {
        let (start, end) = match self {
            ByteRange::From { start, end } => {
                if start >= total {
                    return Span::Unsatisfiable;
                }
                (start, end.map_or(total - 1, |e| e.min(total - 1)))
            }
            ByteRange::Suffix(0) => return Span::Unsatisfiable,
            ByteRange::Suffix(_) if total == 0 => return Span::Unsatisfiable,
            ByteRange::Suffix(k) => (total.saturating_sub(k), total - 1),
        };
        if start == 0 && end == total - 1 {
            // All of it: a plain answer (a client that asked from 0 gets the whole blob).
            return Span::Whole;
        }
        Span::Part { start, end, total }
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteRange, Span};

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        let from = |start, end| Some(ByteRange::From { start, end });
        assert_eq!(ByteRange::parse("bytes=10-"), from(10, None));
        assert_eq!(ByteRange::parse("bytes=10-19"), from(10, Some(19)));
        assert_eq!(ByteRange::parse(" bytes= 0 - 0 "), from(0, Some(0)));
        assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Suffix(5)));
        for ignored in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=5-4",
            "bytes=a-",
            "bytes=1-2,4-5",
            "items=1-",
            "bytes=+1-",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(ByteRange::parse(ignored), None, "{ignored:?}");
        }
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        let part = |start, end, total| Span::Part { start, end, total };
        let r = |s: &str| ByteRange::parse(s).unwrap();
        assert_eq!(r("bytes=10-").resolve(100), part(10, 99, 100));
        assert_eq!(r("bytes=10-1000").resolve(100), part(10, 99, 100));
        assert_eq!(r("bytes=99-").resolve(100), part(99, 99, 100));
        assert_eq!(r("bytes=0-").resolve(100), Span::Whole);
        assert_eq!(r("bytes=0-9").resolve(100), part(0, 9, 100));
        assert_eq!(r("bytes=-10").resolve(100), part(90, 99, 100));
        assert_eq!(r("bytes=-1000").resolve(100), Span::Whole);
        assert_eq!(r("bytes=100-").resolve(100), Span::Unsatisfiable);
        assert_eq!(r("bytes=0-").resolve(0), Span::Unsatisfiable);
        assert_eq!(r("bytes=-0").resolve(100), Span::Unsatisfiable);
    }
}
