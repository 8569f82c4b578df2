//! Checks of notification targets given at deposit and tenant creation: e-mail addresses here;
//! webhook URLs are checked by `netguard` (the rules of where keymaster may connect).

/// A plausible e-mail address: one `@`, a local part, a domain with a dot, no spaces.
pub fn email(addr: &str) -> Result<(), String> {
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
        assert!(email("me@example.net").is_ok());
        assert!(email("me@localhost").is_err());
        assert!(email("me example@x.net").is_err());
        assert!(email("@x.net").is_err());
    }
}
