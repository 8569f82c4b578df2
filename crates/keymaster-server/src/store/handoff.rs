//! The backend-neutral part of the verified handoff's store operations: what a SAS request, a
//! reveal and a dispute do to the stored retrieval, and the events they emit. Each backend
//! loads the retrieval row (with its key's facts), calls the `decide_*` function here, and
//! writes what it says in its own SQL, in one transaction with the event and the audit row.
//!
//! Not responsible for checking who asks (the backends select the row by the retrieving
//! service, or by the holder's key) or for the HTTP answers (`routes::handoff`).

use jiff::{SignedDuration, Timestamp};
use keymaster_core::handoff::{b64url, commitment_matches, Bytes32};
use keymaster_core::wire::Event;

use super::events::{new_event, EventType, KeyRef};

/// After a key deposited with a SAS commitment is gone, its event stream stays open this long
/// after a retrieval whose device nonce is not revealed yet, so that `sas.requested` reaches
/// the device.
pub const REVEAL_WINDOW: SignedDuration = SignedDuration::from_mins(10);

/// A retrieval may be disputed this long after it was made.
pub const DISPUTE_WINDOW: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Both nonces of a retrieval as stored (32 bytes each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SasNonceBytes {
    /// The service's nonce, once it asked for the SAS.
    pub service: Option<Vec<u8>>,
    /// The device's nonce, once revealed.
    pub device: Option<Vec<u8>>,
}

/// How `POST /v1/retrievals/{id}/sas` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasRequestOutcome {
    /// The nonce is recorded and `sas.requested` emitted.
    Requested,
    /// The same nonce was recorded before: nothing changed (a retried request).
    Repeated,
    /// A different nonce was recorded before; the first one stands, since the device may
    /// already have computed its SAS with it.
    NonceAlreadySet,
    /// No retrieval of this id by this service.
    NotFound,
}

/// How `POST /v1/keys/{id}/sas` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevealOutcome {
    /// The nonce is recorded.
    Revealed,
    /// The same nonce was revealed before: nothing changed.
    Repeated,
    /// The service has not asked for the SAS yet (`409 sas_not_requested`).
    NotRequested,
    /// A different nonce was revealed before.
    AlreadyRevealed,
    /// SHA-256 of the nonce is not the key's commitment.
    CommitmentMismatch,
    /// No retrieval of this id of this key.
    NotFound,
}

/// How `POST /v1/retrievals/{id}/dispute` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeOutcome {
    /// `key.disputed` emitted.
    Disputed,
    /// The retrieval was disputed before: nothing more is sent, so that a service cannot
    /// flood the holder's channels with one retrieval.
    AlreadyDisputed,
    /// No retrieval of this id by this service, or it is older than [`DISPUTE_WINDOW`].
    NotFound,
}

/// What a SAS request does to a retrieval whose stored service nonce is `stored`: `Ok` to
/// record `nonce` and emit `sas.requested`, else the outcome to answer without a change.
pub fn decide_request(stored: Option<&[u8]>, nonce: &Bytes32) -> Result<(), SasRequestOutcome> {
    match stored {
        None => Ok(()),
        Some(s) if s == nonce.as_slice() => Err(SasRequestOutcome::Repeated),
        Some(_) => Err(SasRequestOutcome::NonceAlreadySet),
    }
}

/// What a reveal does: `Ok` to record `nonce`, else the outcome to answer without a change.
/// The service must have asked first; a key deposited with a commitment accepts only the nonce
/// that opens it (the service checks again for itself: this only catches a device's mistake
/// early).
pub fn decide_reveal(
    service_nonce: Option<&[u8]>,
    device_nonce: Option<&[u8]>,
    commitment: Option<&[u8]>,
    nonce: &Bytes32,
) -> Result<(), RevealOutcome> {
    if service_nonce.is_none() {
        return Err(RevealOutcome::NotRequested);
    }
    match device_nonce {
        Some(d) if d == nonce.as_slice() => return Err(RevealOutcome::Repeated),
        Some(_) => return Err(RevealOutcome::AlreadyRevealed),
        None => {}
    }
    if let Some(c) = commitment {
        let opens = <&Bytes32>::try_from(c).is_ok_and(|c| commitment_matches(c, nonce));
        if !opens {
            return Err(RevealOutcome::CommitmentMismatch);
        }
    }
    Ok(())
}

/// A retrieval's nonces and its key's commitment, as a reveal reads them:
/// `(service_nonce, device_nonce, sas_commitment)`.
pub type RevealRow = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// [`decide_reveal`] on the row a backend found (`None`: no retrieval of this id of this key).
pub fn decide_reveal_row(row: Option<&RevealRow>, nonce: &Bytes32) -> Result<(), RevealOutcome> {
    let Some((service_nonce, device_nonce, commitment)) = row else {
        return Err(RevealOutcome::NotFound);
    };
    decide_reveal(
        service_nonce.as_deref(),
        device_nonce.as_deref(),
        commitment.as_deref(),
        nonce,
    )
}

/// What a dispute does to a retrieval made at `at`, already disputed or not: `Ok` to record
/// it and emit `key.disputed`, else the outcome to answer without a change.
pub fn decide_dispute(at: Timestamp, disputed: bool, now: Timestamp) -> Result<(), DisputeOutcome> {
    if now.duration_since(at) > DISPUTE_WINDOW {
        return Err(DisputeOutcome::NotFound);
    }
    if disputed {
        return Err(DisputeOutcome::AlreadyDisputed);
    }
    Ok(())
}

/// `sas.requested` for the holder's event stream: the retrieval and the service's nonce.
pub fn sas_requested_event(
    key: &KeyRef<'_>,
    service: (&str, &str),
    retrieval_id: &str,
    nonce: &Bytes32,
    at: Timestamp,
) -> Event {
    let mut e = new_event(EventType::SasRequested, key, Some(service), None, at);
    e.data.retrieval_id = Some(retrieval_id.to_owned());
    e.data.nonce = Some(b64url(nonce));
    e
}

/// `key.disputed`: which service disputes which retrieval, and why.
pub fn disputed_event(
    key: &KeyRef<'_>,
    service: (&str, &str),
    retrieval_id: &str,
    reason: &str,
    at: Timestamp,
) -> Event {
    let mut e = new_event(EventType::Disputed, key, Some(service), Some(reason), at);
    e.data.retrieval_id = Some(retrieval_id.to_owned());
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use keymaster_core::handoff::sas_commitment;

    #[test]
    fn the_first_service_nonce_stands() {
        let n = [1u8; 32];
        assert_eq!(decide_request(None, &n), Ok(()));
        assert_eq!(
            decide_request(Some(&n[..]), &n),
            Err(SasRequestOutcome::Repeated)
        );
        assert_eq!(
            decide_request(Some(&[2u8; 32][..]), &n),
            Err(SasRequestOutcome::NonceAlreadySet)
        );
    }

    #[test]
    fn a_reveal_needs_a_request_and_the_nonce_that_opens_the_commitment() {
        let nd = [3u8; 32];
        let ns = [4u8; 32];
        let commitment = keymaster_core::handoff::decode_32(&sas_commitment(&nd)).unwrap();
        let c = Some(&commitment[..]);
        assert_eq!(
            decide_reveal(None, None, c, &nd),
            Err(RevealOutcome::NotRequested)
        );
        assert_eq!(decide_reveal(Some(&ns[..]), None, c, &nd), Ok(()));
        assert_eq!(decide_reveal(Some(&ns[..]), None, None, &nd), Ok(()));
        assert_eq!(
            decide_reveal(Some(&ns[..]), None, c, &ns),
            Err(RevealOutcome::CommitmentMismatch)
        );
        assert_eq!(
            decide_reveal(Some(&ns[..]), Some(&nd[..]), c, &nd),
            Err(RevealOutcome::Repeated)
        );
        assert_eq!(
            decide_reveal(Some(&ns[..]), Some(&ns[..]), None, &nd),
            Err(RevealOutcome::AlreadyRevealed)
        );
    }

    #[test]
    fn a_dispute_is_allowed_for_seven_days_and_sent_once() {
        let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let now = |d: SignedDuration| at.checked_add(d).unwrap();
        assert_eq!(decide_dispute(at, false, now(DISPUTE_WINDOW)), Ok(()));
        assert_eq!(
            decide_dispute(
                at,
                false,
                now(DISPUTE_WINDOW + SignedDuration::from_millis(1))
            ),
            Err(DisputeOutcome::NotFound)
        );
        assert_eq!(
            decide_dispute(at, true, now(SignedDuration::ZERO)),
            Err(DisputeOutcome::AlreadyDisputed)
        );
    }
}
