//! Domain names in a policy and in a service's enrolment: normalising them (the one parser of
//! both) and matching a service's domains against a policy's.
//!
//! Only ASCII host names are accepted (an internationalised name must be given in its
//! `xn--` form), so that matching is a plain, case-insensitive, label-wise comparison with no
//! Unicode rules to disagree about. This module does not resolve names.

/// Longest host name in presentation form without the trailing dot (RFC 1035).
const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// Normalises a domain: lower case, one trailing dot removed; then every label must be 1 to 63
/// letters, digits or `-` (not at either end) and the whole at most 253 characters. The last
/// label must not be all digits, so an IP address is not taken for a domain. Nothing is
/// trimmed: a space is refused like any other character outside a host name.
pub fn normalise(input: &str) -> Result<String, String> {
    if !input.is_ascii() {
        return Err(
            "must be an ASCII host name (write an internationalised name in its xn-- form)"
                .to_owned(),
        );
    }
    let lower = input.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("`{input}` has an empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "`{input}` has a label longer than {MAX_LABEL_LEN} characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "`{input}` is not a host name: labels may hold only letters, digits and `-`"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "`{input}` is not a host name: a label must not start or end with `-`"
            ));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{input}` is not a host name (an address belongs in fetcher_cidrs)"
        ));
    }
    Ok(name.to_owned())
}

/// Whether the service domain `candidate` equals `listed` or lies below it, label-wise and
/// without regard to ASCII case: `a.example.com` is below `example.com`,
/// `evilexample.com` is not. `listed` is normalised; `candidate` comes from the service's
/// enrolment and is compared with one trailing dot removed.
pub(crate) fn matches(candidate: &str, listed: &str) -> bool {
    let candidate = candidate.strip_suffix('.').unwrap_or(candidate);
    if candidate.len() == listed.len() {
        return candidate.eq_ignore_ascii_case(listed);
    }
    if candidate.len() <= listed.len() {
        return false;
    }
    let split = candidate.len() - listed.len();
    // Byte slicing is safe only on a char boundary; a non-ASCII candidate may not have one here.
    match (candidate.get(..split), candidate.get(split..)) {
        // `head` is at least one label and its dot: ".example.com" is not below "example.com".
        (Some(head), Some(tail)) => {
            head.len() > 1 && head.ends_with('.') && tail.eq_ignore_ascii_case(listed)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (input, want) in [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("a-b.example.com", "a-b.example.com"),
            ("localhost", "localhost"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("123.example.com", "123.example.com"),
        ] {
            assert_eq!(normalise(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejects() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "a.".repeat(126));
        for input in [
            "",
            ".",
            "example..com",
            ".example.com",
            "exa mple.com",
            "-example.com",
            "example-.com",
            "ex_ample.com",
            "*.example.com",
            "bücher.example",
            "10.0.0.1",
            "example.com..",
            "https://example.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(normalise(input).is_err(), "{input:?} accepted");
        }
    }

    #[test]
    fn matching_is_label_wise_and_case_insensitive() {
        for (candidate, listed, want) in [
            ("example.com", "example.com", true),
            ("EXAMPLE.com", "example.com", true),
            ("example.com.", "example.com", true),
            ("a.example.com", "example.com", true),
            ("a.b.Example.Com", "example.com", true),
            ("evilexample.com", "example.com", false),
            ("example.com.evil", "example.com", false),
            ("com", "example.com", false),
            ("xample.com", "example.com", false),
            (".example.com", "example.com", false),
            ("é.example.com", "example.com", true),
            ("éxample.com", "example.com", false),
            ("", "example.com", false),
        ] {
            assert_eq!(matches(candidate, listed), want, "{candidate} vs {listed}");
        }
    }
}
