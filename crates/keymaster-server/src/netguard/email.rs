//! The check of an e-mail notification target as it is given (deposit): a plausible address.
//! Where the mail goes from there is the SMTP relay's business (`dispatch::email`).

/// A plausible e-mail address: one `@`, a local part, a domain with a dot, no spaces, at most
/// 254 characters. The message says what is wrong.
pub fn check_email(addr: &str) -> Result<(), String> {
    let ok = addr.len() <= 254
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(addr.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
               && !domain.starts_with('.') && !domain.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err("not an e-mail address".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(check_email("me@example.net").is_ok());
        assert!(check_email("me@localhost").is_err());
        assert!(check_email("me example@x.net").is_err());
        assert!(check_email("@x.net").is_err());
        assert!(check_email("me@x.net.").is_err());
        assert!(check_email("me@a@x.net").is_err());
        assert!(check_email(&format!("{}@x.net", "a".repeat(250))).is_err());
    }
}
