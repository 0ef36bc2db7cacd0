//! A Server-Sent Events parser (the `text/event-stream` format of the HTML standard), fed with the
//! bytes of a `fetch` body as they arrive. Pure, so it is unit-tested on the host.
//!
//! The console reads event streams through `fetch` rather than `EventSource` because `EventSource`
//! cannot send the `Authorization` header, and the access token must not go in a URL (URLs end up in
//! logs and history).

/// One dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `event:`; `message` when the server named none.
    pub event: String,
    /// Every `data:` line, joined with newlines.
    pub data: String,
    /// The last `id:` seen on the stream so far (it carries over to later messages, as in browsers).
    pub id: Option<String>,
}

#[derive(Default)]
pub struct Parser {
    /// Bytes of a line not yet ended (a chunk may end anywhere, even inside a UTF-8 sequence).
    partial: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
}

impl Parser {
    /// The last `id:` the stream gave, with or without data (a server may send its position alone).
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Feeds a chunk; returns the messages it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line(&String::from_utf8_lossy(&line), &mut out);
            } else {
                self.partial.push(b);
            }
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Message>) {
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.event) };
                out.push(Message { event, data: std::mem::take(&mut self.data), id: self.last_id.clone() });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields: the console reconnects on its own schedule
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_chunks_and_lines() {
        let mut p = Parser::default();
        assert!(p.push(b"id: 7\nevent: service.obs").is_empty());
        let got = p.push(b"erved\ndata: {\"a\":\ndata: 1}\r\n\r\n: keep-alive\n\ndata: x\n\n");
        assert_eq!(
            got,
            vec![
                Message { event: "service.observed".into(), data: "{\"a\":\n1}".into(), id: Some("7".into()) },
                Message { event: "message".into(), data: "x".into(), id: Some("7".into()) },
            ]
        );
    }

    #[test]
    fn a_position_alone_is_no_message_but_is_remembered() {
        let mut p = Parser::default();
        assert!(p.push(b": resume point\nid: 41\n\n").is_empty());
        assert_eq!(p.last_id(), Some("41"));
        let got = p.push(b"data: x\n\n");
        assert_eq!(got[0].id.as_deref(), Some("41"));
    }

    #[test]
    fn a_multibyte_character_split_between_chunks_survives() {
        let mut p = Parser::default();
        let text = "data: héllo\n\n".as_bytes();
        let (a, b) = text.split_at(8); // inside `é`
        assert!(p.push(a).is_empty());
        assert_eq!(p.push(b)[0].data, "héllo");
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut p = Parser::default();
        assert!(p.push(b"event: x\n\nretry: 1000\n\n").is_empty());
    }
}
