//! Stored rows decoded once for every backend: the [`Columns`] a backend's row type gives, and
//! the decoders of rows both backends read the same way (services, audit rows, code formats;
//! the key rows of the lifecycle are in `lifecycle`, events in `events`).

use ipnet::IpNet;
use keymaster_core::wire::{AuditEntry, CodeFormat};

use super::{ServiceAuth, StoreError};

/// A stored row read column by column, whichever database it came from.
pub trait Columns {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
    /// A non-negative count (`retrievals`, …).
    fn count(&self, i: usize) -> Result<u32, StoreError> {
        let v = self.int(i)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("count {v}")))
    }
}

/// Implements [`Columns`] for a backend's row type with its getter (`get`, `try_get`, …) and
/// its error mapping.
macro_rules! impl_columns {
    ($row:ty, $get:ident, $err:path) => {
        impl $crate::store::columns::Columns for $row {
            fn text(&self, i: usize) -> Result<String, StoreError> {
                self.$get(i).map_err($err)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
                self.$get(i).map_err($err)
            }
            fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
                self.$get(i).map_err($err)
            }
            fn int(&self, i: usize) -> Result<i64, StoreError> {
                self.$get(i).map_err($err)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
                self.$get(i).map_err($err)
            }
            fn flag(&self, i: usize) -> Result<bool, StoreError> {
                self.$get(i).map_err($err)
            }
        }
    };
}
pub(crate) use impl_columns;

/// The columns of [`read_service`].
pub const SERVICE_COLUMNS: &str = "id, name, domains, allowed_cidrs, confined_tenant_id";

/// Decodes [`SERVICE_COLUMNS`] (domains and CIDRs are stored as JSON arrays).
pub fn read_service(r: &impl Columns) -> Result<ServiceAuth, StoreError> {
    let domains: Vec<String> = serde_json::from_str(&r.text(2)?)
        .map_err(|e| StoreError::Corrupt(format!("service domains: {e}")))?;
    let allowed_cidrs: Vec<IpNet> = serde_json::from_str(&r.text(3)?)
        .map_err(|e| StoreError::Corrupt(format!("service cidrs: {e}")))?;
    Ok(ServiceAuth {
        id: r.text(0)?,
        name: r.text(1)?,
        domains,
        allowed_cidrs,
        confined_tenant_id: r.opt_text(4)?,
    })
}

/// The columns of [`read_audit`].
pub const AUDIT_COLUMNS: &str = "id, at, actor, action, outcome, key_id, ip, detail";

/// Decodes [`AUDIT_COLUMNS`].
pub fn read_audit(r: &impl Columns) -> Result<AuditEntry, StoreError> {
    let at = r.int(1)?;
    Ok(AuditEntry {
        id: r.int(0)?,
        at: jiff::Timestamp::from_millisecond(at)
            .map_err(|e| StoreError::Corrupt(format!("audit time: {e}")))?,
        actor: r.text(2)?,
        action: r.text(3)?,
        outcome: r.text(4)?,
        key_id: r.opt_text(5)?,
        ip: r.opt_text(6)?,
        detail: r.opt_text(7)?,
    })
}

/// A code format's stored name.
pub fn format_name(f: CodeFormat) -> &'static str {
    match f {
        CodeFormat::Digits => "digits",
        CodeFormat::Base32 => "base32",
    }
}

/// Back from [`format_name`].
pub fn parse_format(name: &str) -> CodeFormat {
    if name == "base32" {
        CodeFormat::Base32
    } else {
        CodeFormat::Digits
    }
}
