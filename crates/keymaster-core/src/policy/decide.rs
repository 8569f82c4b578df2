//! The decision at retrieval: [`decide`].
//!
//! Pure: no clock, no I/O, no randomness. The server reads [`KeyFacts`] inside its
//! transaction, calls [`decide`] with the request's instant and applies the [`Decision`]
//! (count a retrieval, record a pending confirmation, count a wrong password, lock the key).
//! This module only decides; it changes nothing.

use std::net::IpAddr;

use jiff::Timestamp;

use super::{
    domain, Decision, Denial, KeyFacts, PasswordCheck, Policy, Requester, MAX_PASSWORD_FAILURES,
};

/// Decides one retrieval of a live key at instant `now`.
///
/// The rules are tried in this order, and the first that refuses gives the answer:
///
/// 1. **Gone** (`404 not_found`): `now` is at or after `expires_at`; the key is held for
///    another service's confirmation; a pending confirmation's grace is over; or (defensively,
///    should the store not have removed it) `max_retrievals` is used up with nothing pending.
/// 2. **Locked**: the key is locked, or has [`MAX_PASSWORD_FAILURES`] wrong passwords.
/// 3. **AllowAgain**: the same service asks again during its grace — it gets the same
///    retrieval id, without the rules below being tried again.
/// 4. `services`, 5. `domains`, 6. `fetcher_cidrs`, 7. `time_window`, 8. `geo`,
/// 9. `proximity`.
/// 10. **Password** last, so that a requester the policy refuses anyway cannot use up the
///     holder's password tries, nor make the server run argon2: a password not checked yet
///     ([`PasswordCheck::Unverified`]) is answered [`Decision::VerifyPassword`] only here.
///     When the policy has no password, [`Requester::password`] is ignored.
pub fn decide(policy: &Policy, facts: &KeyFacts, req: &Requester, now: Timestamp) -> Decision {
    match check(policy, facts, req, now) {
        Ok(decision) => decision,
        Err(denial) => Decision::Deny(denial),
    }
}

/// [`decide`] with `?`: `Err` is the first rule that refuses.
fn check(
    policy: &Policy,
    facts: &KeyFacts,
    req: &Requester,
    now: Timestamp,
) -> Result<Decision, Denial> {
    if super::is_expired(facts.expires_at, now) {
        return Err(Denial::Gone);
    }
    match &facts.pending {
        Some(p) if p.service_id != req.service_id || now >= p.confirm_by => {
            return Err(Denial::Gone);
        }
        None if facts.retrievals >= policy.max_retrievals => return Err(Denial::Gone),
        _ => {}
    }
    if facts.locked || facts.failed_password_attempts >= MAX_PASSWORD_FAILURES {
        return Err(Denial::Locked);
    }
    if let Some(p) = &facts.pending {
        // Same service, before confirm_by: both checked above.
        return Ok(Decision::AllowAgain {
            retrieval_id: p.retrieval_id.clone(),
        });
    }
    if let Some(services) = &policy.services {
        if !services.iter().any(|s| s == req.service_id) {
            return Err(Denial::ServiceNotAllowed);
        }
    }
    if let Some(domains) = &policy.domains {
        let allowed = req
            .service_domains
            .iter()
            .any(|candidate| domains.iter().any(|d| domain::matches(candidate, d)));
        if !allowed {
            return Err(Denial::DomainNotAllowed);
        }
    }
    if let Some(nets) = &policy.fetcher_cidrs {
        if !source_allowed(nets, req.source_ip) {
            return Err(Denial::IpNotAllowed);
        }
    }
    if let Some(window) = &policy.time_window {
        if !window.contains(now) {
            return Err(Denial::OutsideTimeWindow);
        }
    }
    if let Some(geo) = &policy.geo {
        geo.check(req.context)?;
    }
    if policy.proximity.is_some() {
        super::proximity::check(facts.origin_network.as_ref(), req.context)?;
    }
    if policy.has_password {
        match req.password {
            PasswordCheck::Correct => {}
            PasswordCheck::Unverified => return Ok(Decision::VerifyPassword),
            PasswordCheck::NotGiven => return Err(Denial::PasswordRequired),
            PasswordCheck::Incorrect => {
                return Err(Denial::PasswordIncorrect {
                    now_locked: facts.failed_password_attempts.saturating_add(1)
                        >= MAX_PASSWORD_FAILURES,
                })
            }
        }
    }
    Ok(Decision::Allow)
}

/// Whether `ip` is inside one of `nets`. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
/// dual-stack socket reports an IPv4 peer) is the IPv4 host it stands for: each form of the
/// host, plain IPv4 and mapped IPv6, is matched against every network, so a policy written in
/// either form matches a peer reported in either form.
fn source_allowed(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let forms: [IpAddr; 2] = match ip.to_canonical() {
        IpAddr::V4(v4) => [IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped())],
        v6 => [v6, v6],
    };
    nets.iter()
        .any(|net| forms.iter().any(|form| net.contains(form)))
}
