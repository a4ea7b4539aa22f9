//! What instances write to stdout and stderr, kept per function in a bounded buffer (the
//! latest lines win) and served by `GET /v1/functions/{name}/logs`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Lines kept per function.
pub const LOG_LINES: usize = 4000;
/// Longest line kept; longer ones are cut (with a marker).
pub const LINE_BYTES: usize = 4096;
/// Bytes of an instance's stderr kept for error answers.
pub const STDERR_TAIL_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub instance: u64,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub text: String,
}

#[derive(Default)]
pub struct LogBuffer {
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogBuffer {
    pub fn push(&self, instance: u64, stream: &'static str, text: &[u8]) {
        let mut text = String::from_utf8_lossy(text).trim_end().to_owned();
        if text.len() > LINE_BYTES {
            let mut cut = LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" …(cut)");
        }
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(LogLine {
            at_ms: crate::core::unix_ms(),
            instance,
            stream,
            text,
        });
    }

    /// The latest `tail` lines, optionally of one instance, oldest first.
    pub fn tail(&self, tail: usize, instance: Option<u64>) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<LogLine> = lines
            .iter()
            .rev()
            .filter(|l| instance.is_none_or(|i| l.instance == i))
            .take(tail)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// The last bytes a process wrote to stderr, for error answers.
#[derive(Default)]
pub struct Tail {
    bytes: VecDeque<u8>,
}

impl Tail {
    pub fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        let excess = self.bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        self.bytes.drain(..excess);
    }

    pub fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut all = a.to_vec();
        all.extend_from_slice(b);
        String::from_utf8_lossy(&all).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_keeps_the_latest_lines_per_instance() {
        let logs = LogBuffer::default();
        for i in 0..LOG_LINES + 10 {
            logs.push((i % 2) as u64, "stderr", format!("line {i}\n").as_bytes());
        }
        let all = logs.tail(usize::MAX, None);
        assert_eq!(all.len(), LOG_LINES);
        assert_eq!(all.last().unwrap().text, format!("line {}", LOG_LINES + 9));
        let odd = logs.tail(2, Some(1));
        assert_eq!(
            odd.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            [
                format!("line {}", LOG_LINES + 7),
                format!("line {}", LOG_LINES + 9)
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let logs = LogBuffer::default();
        logs.push(1, "stdout", "é".repeat(LINE_BYTES).as_bytes());
        let line = &logs.tail(1, None)[0].text;
        assert!(line.ends_with("…(cut)") && line.len() <= LINE_BYTES + 10);
    }

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; STDERR_TAIL_BYTES]);
        tail.push(b"\nthe end\n");
        let text = tail.text();
        assert!(text.ends_with("the end"));
        assert_eq!(
            text.len(),
            STDERR_TAIL_BYTES - 1,
            "the final newline is trimmed"
        );
    }
}
