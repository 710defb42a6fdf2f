//! A message as filters see it and change it: header fields kept as
//! written (so that unchanged ones go out byte for byte), and the body.

/// One header field: its name and everything after the colon, folding
/// included, without the final CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name as written.
    pub name: String,
    /// The raw value (after the colon).
    pub raw: String,
}

impl Field {
    /// The value as filters see it: unfolded line breaks as `\n`, without
    /// the space after the colon.
    pub fn value(&self) -> String {
        let v = self.raw.replace("\r\n", "\n");
        v.strip_prefix(' ').unwrap_or(&v).to_owned()
    }

    fn from_value(name: &str, value: &str) -> Field {
        let value = value.replace("\r\n", "\n").replace('\n', "\r\n");
        Field {
            name: name.to_owned(),
            raw: format!(" {value}"),
        }
    }
}

/// A message split into its header fields and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header fields, in order.
    pub fields: Vec<Field>,
    /// The body (after the empty line), CRLF line endings.
    pub body: Vec<u8>,
}

impl Message {
    /// Splits `bytes` (CRLF line endings). A line that is neither a field
    /// nor its continuation ends the header, as does the empty line.
    pub fn parse(bytes: &[u8]) -> Message {
        let mut fields: Vec<Field> = Vec::new();
        let mut rest = bytes;
        loop {
            let (line, next) = match rest.windows(2).position(|w| w == b"\r\n") {
                Some(i) => (
                    rest.get(..i).unwrap_or_default(),
                    rest.get(i + 2..).unwrap_or_default(),
                ),
                None => (rest, &[][..]),
            };
            if line.is_empty() {
                let body = if rest.starts_with(b"\r\n") {
                    next
                } else {
                    rest
                };
                return Message {
                    fields,
                    body: body.to_vec(),
                };
            }
            let text = String::from_utf8_lossy(line);
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if let Some(last) = fields.last_mut() {
                    last.raw.push_str("\r\n");
                    last.raw.push_str(&text);
                    rest = next;
                    continue;
                }
            }
            match text.split_once(':') {
                Some((name, raw)) if !name.is_empty() && !name.contains(' ') => {
                    fields.push(Field {
                        name: name.to_owned(),
                        raw: raw.to_owned(),
                    });
                    rest = next;
                }
                _ => {
                    return Message {
                        fields,
                        body: rest.to_vec(),
                    };
                }
            }
        }
    }

    /// The message again: fields, the empty line, the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64 * self.fields.len());
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(f.raw.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(Field::value)
    }

    /// Adds a field at the end of the header.
    pub fn add_header(&mut self, name: &str, value: &str) {
        self.fields.push(Field::from_value(name, value));
    }

    /// Inserts a field at `index` (0 is first; past the end adds it).
    pub fn insert_header(&mut self, index: usize, name: &str, value: &str) {
        let at = index.min(self.fields.len());
        self.fields.insert(at, Field::from_value(name, value));
    }

    /// Changes the `index`th (from 1) field named `name`; an empty value
    /// deletes it; a field that is not there is added.
    pub fn change_header(&mut self, index: usize, name: &str, value: &str) {
        let found = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name.eq_ignore_ascii_case(name))
            .nth(index.saturating_sub(1))
            .map(|(i, _)| i);
        match (found, value.is_empty()) {
            (Some(i), true) => {
                self.fields.remove(i);
            }
            (Some(i), false) => {
                if let Some(f) = self.fields.get_mut(i) {
                    *f = Field::from_value(&f.name.clone(), value);
                }
            }
            (None, false) => self.add_header(name, value),
            (None, true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] =
        b"Received: from a\r\n\tby b\r\nSubject: hi\r\nX-A: 1\r\n\r\nbody\r\n.. line\r\n";

    #[test]
    fn unchanged_messages_go_out_byte_for_byte() {
        let m = Message::parse(TEXT);
        assert_eq!(m.fields.len(), 3);
        assert_eq!(m.fields[0].value(), "from a\n\tby b");
        assert_eq!(m.body, b"body\r\n.. line\r\n");
        assert_eq!(m.to_bytes(), TEXT);
    }

    #[test]
    fn headers_are_added_inserted_changed_and_deleted() {
        let mut m = Message::parse(TEXT);
        m.add_header("X-Spam", "Yes");
        m.insert_header(0, "X-First", "1");
        m.change_header(1, "subject", "[SPAM] hi");
        m.change_header(1, "X-A", "");
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.starts_with("X-First: 1\r\nReceived: from a\r\n\tby b\r\nSubject: [SPAM] hi\r\nX-Spam: Yes\r\n\r\nbody"), "{text}");
        assert_eq!(m.header("SUBJECT").as_deref(), Some("[SPAM] hi"));
    }

    #[test]
    fn a_message_without_header_is_all_body() {
        let m = Message::parse(b"just text\r\n");
        assert!(m.fields.is_empty());
        assert_eq!(m.to_bytes(), b"\r\njust text\r\n");
    }
}
