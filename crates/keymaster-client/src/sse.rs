//! An incremental parser for `text/event-stream` (the WHATWG "server-sent events" format), fed
//! with the chunks of a response body as they arrive. It only splits the stream into messages;
//! turning a message's `data` into an [`keymaster_core::wire::Event`] is the holder client's job.

/// One dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseMessage {
    /// The last event id seen so far in the stream (the `id:` field persists across messages).
    pub(crate) id: Option<String>,
    /// The `event:` field, `message` when absent.
    pub(crate) event: String,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
    /// The byte-order mark may only appear at the very start of the stream.
    started: bool,
    data: String,
    has_data: bool,
    event: String,
    last_id: Option<String>,
}

impl SseParser {
    /// Feeds one chunk; returns the messages it completed, in order. A message still open when
    /// the stream ends is dropped, as the format prescribes.
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Vec<SseMessage> {
        let mut out = Vec::new();
        if !self.started && !chunk.is_empty() {
            self.started = true;
            if let Some(rest) = chunk.strip_prefix(b"\xEF\xBB\xBF") {
                chunk = rest;
            }
        }
        for &byte in chunk {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(message) = self.line_done(&String::from_utf8_lossy(&line)) {
                        out.push(message);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        out
    }

    /// Applies one complete line; a blank line dispatches the message being built.
    fn line_done(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let mut data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            return Some(SseMessage {
                id: self.last_id.clone(),
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                },
                data,
            });
        }
        if line.starts_with(':') {
            return None; // a comment, such as a keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') => {
                self.last_id = (!value.is_empty()).then(|| value.to_owned());
            }
            _ => {} // `retry` and unknown fields: nothing for this client to do
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: Option<&str>, event: &str, data: &str) -> SseMessage {
        SseMessage {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn parses_id_event_and_data() {
        let mut p = SseParser::default();
        let out = p.push(b"id: evt_1\nevent: key.retrieved\ndata: {\"a\":1}\n\n");
        assert_eq!(out, vec![msg(Some("evt_1"), "key.retrieved", "{\"a\":1}")]);
    }

    #[test]
    fn joins_data_lines_and_defaults_the_event_type() {
        let mut p = SseParser::default();
        let out = p.push(b"data: one\ndata:two\ndata\n\n");
        assert_eq!(out, vec![msg(None, "message", "one\ntwo\n")]);
    }

    #[test]
    fn handles_chunks_split_anywhere_and_every_line_ending() {
        let stream =
            b"\xEF\xBB\xBF: keep-alive\r\nid: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\rdata: c\n\n";
        let whole = SseParser::default().push(stream);
        assert_eq!(
            whole,
            vec![
                msg(Some("1"), "message", "a"),
                msg(Some("2"), "message", "b"),
                msg(Some("2"), "message", "c"),
            ]
        );
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut out = p.push(&stream[..split]);
            out.extend(p.push(&stream[split..]));
            assert_eq!(out, whole, "split at {split}");
        }
        let mut p = SseParser::default();
        let bytewise: Vec<_> = stream.iter().flat_map(|b| p.push(&[*b])).collect();
        assert_eq!(bytewise, whole);
    }

    #[test]
    fn ignores_comments_retry_unknown_fields_and_empty_messages() {
        let mut p = SseParser::default();
        let out = p.push(b": hi\nretry: 1000\nfoo: bar\n\nevent: x\n\ndata: d\n\n");
        // `event: x` without data dispatches nothing and does not leak into the next message.
        assert_eq!(out, vec![msg(None, "message", "d")]);
    }

    #[test]
    fn drops_an_unfinished_message_and_keeps_multibyte_text() {
        let mut p = SseParser::default();
        let out = p.push("data: grüße\n\ndata: half".as_bytes());
        assert_eq!(out, vec![msg(None, "message", "grüße")]);
    }

    #[test]
    fn an_empty_id_resets_the_last_id() {
        let mut p = SseParser::default();
        let out = p.push(b"id: 7\ndata: a\n\nid\ndata: b\n\n");
        assert_eq!(
            out,
            vec![msg(Some("7"), "message", "a"), msg(None, "message", "b")]
        );
    }
}
