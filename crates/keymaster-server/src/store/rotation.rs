//! What a rotation of the server secret asks of a backend: where sealed blobs live, pages of
//! those not sealed under the current secret, and their compare-and-set replacement.
//!
//! The store never opens a blob: the re-sealing task (`crate::reseal`) reads a page, opens and
//! seals in memory, and hands back the new blobs with the old ones, so that a row changed in
//! between (a webhook secret rotated, a key ended) is left as it is.

/// A column that holds sealed blobs, with the context each is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedPlace {
    /// `keys.secret_sealed` (a `secret` key's bytes), bound to the key id.
    KeySecret,
    /// `tenants.webhook_secret_sealed`, bound to the tenant id.
    TenantWebhook,
    /// `tenants.previous_secret_sealed` (during a webhook secret rotation), bound to the
    /// tenant id.
    TenantPreviousWebhook,
}

impl SealedPlace {
    /// Every place, in the order the re-sealing task visits them.
    pub const ALL: [SealedPlace; 3] = [
        SealedPlace::TenantWebhook,
        SealedPlace::TenantPreviousWebhook,
        SealedPlace::KeySecret,
    ];

    /// The table and column, for SQL built from these constants only.
    pub fn table_column(self) -> (&'static str, &'static str) {
        match self {
            SealedPlace::KeySecret => ("keys", "secret_sealed"),
            SealedPlace::TenantWebhook => ("tenants", "webhook_secret_sealed"),
            SealedPlace::TenantPreviousWebhook => ("tenants", "previous_secret_sealed"),
        }
    }
}

/// A sealed blob and the id of its row (which is also its sealing context).
#[derive(Debug, Clone)]
pub struct SealedBlob {
    pub id: String,
    pub blob: Vec<u8>,
}

/// A blob sealed again: replaces `old` in row `id` if the row still holds `old`.
#[derive(Debug, Clone)]
pub struct Resealed {
    pub id: String,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}
