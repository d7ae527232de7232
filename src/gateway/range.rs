//! The `Range` request header for one byte range (RFC 9110 §14.2), which is what download
//! tools send to resume a transfer. Requests for several ranges get the whole content, which
//! the RFC allows.

/// Part of the content to send for a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole content, with status 200.
    Full,
    /// Bytes `start..=end`, with status 206.
    Partial { start: u64, end: u64 },
    /// No byte of the range exists, so the response is 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value for content of `size` bytes.
///
/// A header that is not a single `bytes=` range is ignored, as RFC 9110 permits, so the client
/// gets the whole content.
pub fn parse(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match last.parse::<u64>() {
            Ok(0) => ByteRange::Unsatisfiable,
            Ok(_) if size == 0 => ByteRange::Unsatisfiable,
            Ok(suffix) => ByteRange::Partial {
                start: size.saturating_sub(suffix),
                end: size - 1,
            },
            Err(_) => ByteRange::Full,
        },
        // `bytes=N-` or `bytes=N-M`.
        (false, _) => {
            let Ok(start) = first.parse::<u64>() else {
                return ByteRange::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match last.parse::<u64>() {
                    Ok(end) if end >= start => end,
                    _ => return ByteRange::Full,
                }
            };
            if start >= size {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        (true, true) => ByteRange::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_parsed() {
        let cases = [
            ("bytes=0-99", ByteRange::Partial { start: 0, end: 99 }),
            (
                "bytes=100-",
                ByteRange::Partial {
                    start: 100,
                    end: 999,
                },
            ),
            (
                "bytes=900-5000",
                ByteRange::Partial {
                    start: 900,
                    end: 999,
                },
            ),
            (
                "bytes=-10",
                ByteRange::Partial {
                    start: 990,
                    end: 999,
                },
            ),
            ("bytes=-5000", ByteRange::Partial { start: 0, end: 999 }),
            (" bytes= 5 - 9 ", ByteRange::Partial { start: 5, end: 9 }),
        ];
        for (header, expected) in cases {
            assert_eq!(parse(Some(header), 1000), expected, "{header}");
        }
    }

    #[test]
    fn unsatisfiable_ranges_detected() {
        assert_eq!(parse(Some("bytes=1000-"), 1000), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 1000), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
    }

    #[test]
    fn other_headers_get_full_content() {
        for header in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=9-1",
            "bytes=a-b",
            "bytes=-",
        ] {
            assert_eq!(parse(Some(header), 1000), ByteRange::Full, "{header}");
        }
        assert_eq!(parse(None, 1000), ByteRange::Full);
    }
}
