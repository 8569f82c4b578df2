//! E-mail notifications over SMTP (lettre): one short, human-readable message per event, such
//! as `Your key "github.com" was retrieved by example-web at 14:02 UTC`. Never a code, never key
//! material — the event carries neither.

use keymaster_core::wire::Event;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// A configured SMTP relay.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// Builds the relay from `smtp_url` (`smtp://host:port`, `smtps://…`) and `smtp_from`.
    pub fn new(smtp_url: &str, from: &str) -> Result<Mailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| format!("smtp_url: {e}"))?
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("smtp_from: {from:?} is not an address ({e})"))?;
        Ok(Mailer { transport, from })
    }

    /// Sends the message for `event` to `to`.
    pub async fn send(&self, to: &str, event: &Event) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("bad address: {e}"))?;
        let (subject, text) = message(event);
        let mail = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(text)
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(mail)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {e}"))
    }
}

/// Subject and body of the message for an event.
pub fn message(event: &Event) -> (String, String) {
    let label = event.data.label.as_deref().unwrap_or(&event.data.key_id);
    let service = event
        .data
        .service
        .as_ref()
        .map(|s| s.name.as_str())
        .unwrap_or("a service");
    let reason = event.data.reason.as_deref().unwrap_or("policy");
    let what = match event.event_type.as_str() {
        "key.deposited" => "was deposited".to_owned(),
        "key.retrieved" => format!("was retrieved by {service}"),
        "key.confirmed" => format!("was confirmed by {service}"),
        "key.denied" => format!("was refused to {service} ({reason})"),
        "key.expired" => "expired".to_owned(),
        "key.revoked" => "was revoked".to_owned(),
        "key.locked" => "was locked after too many wrong passwords".to_owned(),
        "key.unconfirmed" => {
            format!("was not confirmed by {service} within its grace and is gone")
        }
        "code.reissued" => "got a new code".to_owned(),
        "code.stale_used" => format!("had an old code presented again by {service}"),
        "key.previewed" => format!("was looked at by {service} before retrieval"),
        "key.disputed" => {
            format!("was disputed by {service} ({reason}): what it received may not be your key")
        }
        other => format!("had an event: {other}"),
    };
    let when = event.timestamp.strftime("%H:%M UTC");
    let subject = format!("keymaster: your key \"{label}\" {what}");
    let body = format!(
        "Your key \"{label}\" {what} at {when}.\n\nEvent {} ({}), key {}.\n",
        event.id, event.event_type, event.data.key_id
    );
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keymaster_core::wire::{EventData, ServiceRef};

    #[test]
    fn message_names_key_service_and_time() {
        let event = Event {
            id: "evt_1".into(),
            event_type: "key.retrieved".into(),
            timestamp: "2026-11-26T14:02:09Z".parse().unwrap(),
            data: EventData {
                key_id: "key_1".into(),
                tenant_id: "ten_1".into(),
                label: Some("github.com".into()),
                service: Some(ServiceRef {
                    id: "svc_1".into(),
                    name: "example-web".into(),
                }),
                reason: None,
                retrieval_id: None,
                nonce: None,
            },
        };
        let (subject, body) = message(&event);
        assert!(
            body.starts_with("Your key \"github.com\" was retrieved by example-web at 14:02 UTC.")
        );
        assert!(subject.contains("github.com"));
    }
}
