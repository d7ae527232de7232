//! `Link` header parsing for paginated registry listings (RFC 8288, as the distribution
//! specification uses it for the tag list).

/// Returns the target of the `rel="next"` link in a `Link` header value, as written (often a
/// path relative to the registry).
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        let is_next = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        is_next.then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_table() {
        let cases = [
            (
                r#"</v2/acme/app/tags/list?n=2&last=v2>; rel="next""#,
                Some("/v2/acme/app/tags/list?n=2&last=v2"),
            ),
            (
                "<https://r.example.com/v2/a/tags/list?last=b>;rel=next",
                Some("https://r.example.com/v2/a/tags/list?last=b"),
            ),
            (
                r#"</first>; rel="prev", </second>; rel="next""#,
                Some("/second"),
            ),
            (r#"</x>; title="a"; REL="prefetch next""#, Some("/x")),
            (r#"</x>; rel="prev""#, None),
            ("", None),
            ("garbage", None),
        ];
        for (header, expected) in cases {
            assert_eq!(next_link(header), expected, "{header:?}");
        }
    }
}
