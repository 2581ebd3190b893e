//! A reader of server-sent events (`text/event-stream`) from a streaming HTTP response.

use anyhow::Result;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// One event: its name (`message` when unnamed), data lines joined by `\n`, and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
    pub id: Option<String>,
}

/// Splits a byte stream into events.
pub struct EventReader {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl EventReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        }
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(block) = take_block(&mut self.buffer) {
                if let Some(event) = parse_block(&block) {
                    return Ok(Some(event));
                }
                continue;
            }
            match self.body.next().await {
                Some(chunk) => self.buffer.extend_from_slice(&chunk?),
                None => return Ok(None),
            }
        }
    }
}

/// Removes and returns the first complete block (up to a blank line), without its terminator.
fn take_block(buffer: &mut Vec<u8>) -> Option<String> {
    // Normalise CRLF so the blank-line search is one pattern; event data never holds raw CR.
    if buffer.contains(&b'\r') {
        let bytes = std::mem::take(buffer);
        *buffer = bytes
            .iter()
            .enumerate()
            .filter(|(i, b)| !(**b == b'\r' && bytes.get(i + 1) == Some(&b'\n')))
            .map(|(_, b)| *b)
            .collect();
    }
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    let block: Vec<u8> = buffer.drain(..end + 2).collect();
    Some(String::from_utf8_lossy(&block[..end]).into_owned())
}

/// The event of a block; `None` for a block of comments only (keep-alives).
fn parse_block(block: &str) -> Option<Event> {
    let mut name = None;
    let mut data: Option<String> = None;
    let mut id = None;
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_string()),
            "id" => id = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    let data = data?;
    Some(Event {
        name: name.unwrap_or_else(|| "message".to_string()),
        data,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_events_and_comments_are_skipped() {
        let mut buffer = b": keep-alive\n\nevent: log\r\nid: 1:5\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\npartial".to_vec();
        let first = take_block(&mut buffer).unwrap();
        assert_eq!(parse_block(&first), None);
        let second = parse_block(&take_block(&mut buffer).unwrap()).unwrap();
        assert_eq!(
            second,
            Event {
                name: "log".into(),
                data: "{\"a\":1}".into(),
                id: Some("1:5".into())
            }
        );
        let third = parse_block(&take_block(&mut buffer).unwrap()).unwrap();
        assert_eq!(
            (third.name.as_str(), third.data.as_str()),
            ("message", "x\ny")
        );
        assert_eq!(take_block(&mut buffer), None);
        assert_eq!(buffer, b"partial");
    }
}
