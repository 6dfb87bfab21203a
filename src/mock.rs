//! In-memory stream for unit tests: canned server bytes in, captured client bytes out.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::transport::SetTimeout;

/// What the mock does when its canned input runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtEnd {
    /// `read` returns 0.
    Eof,
    /// `read` returns `WouldBlock` (a silent server).
    Silent,
}

/// A scripted peer: each `read` returns at most `chunk` bytes of the next
/// canned input; every write is captured.
#[derive(Debug)]
pub(crate) struct MockStream {
    input: VecDeque<u8>,
    pub(crate) written: Vec<u8>,
    pub(crate) writes: usize,
    pub(crate) flushes: usize,
    chunk: usize,
    at_end: AtEnd,
    pub(crate) nonblocking: bool,
    pub(crate) read_timeout: Option<Duration>,
    /// Fail writes with this kind after this many bytes were written.
    pub(crate) fail_write_after: Option<(usize, io::ErrorKind)>,
    /// What `is_encrypted` answers (true: the mock stands in for TLS).
    pub(crate) encrypted: bool,
}

impl MockStream {
    pub(crate) fn new(input: impl AsRef<[u8]>) -> Self {
        MockStream {
            input: input.as_ref().iter().copied().collect(),
            written: Vec::new(),
            writes: 0,
            flushes: 0,
            chunk: usize::MAX,
            at_end: AtEnd::Eof,
            nonblocking: false,
            read_timeout: None,
            fail_write_after: None,
            encrypted: true,
        }
    }

    pub(crate) fn chunk(mut self, n: usize) -> Self {
        self.chunk = n.max(1);
        self
    }

    pub(crate) fn at_end(mut self, at_end: AtEnd) -> Self {
        self.at_end = at_end;
        self
    }

    pub(crate) fn push_input(&mut self, bytes: impl AsRef<[u8]>) {
        self.input.extend(bytes.as_ref());
    }

    pub(crate) fn written_str(&self) -> String {
        String::from_utf8_lossy(&self.written).into_owned()
    }
}

impl Read for MockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return match self.at_end {
                AtEnd::Eof => Ok(0),
                AtEnd::Silent => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        let n = buf.len().min(self.chunk).min(self.input.len());
        for (slot, b) in buf.iter_mut().zip(self.input.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some((after, kind)) = self.fail_write_after {
            if self.written.len() >= after {
                return Err(kind.into());
            }
        }
        self.writes += 1;
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

impl SetTimeout for MockStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        Ok(())
    }
    fn set_write_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        self.nonblocking = nonblocking;
        Ok(())
    }
    fn is_encrypted(&self) -> bool {
        self.encrypted
    }
}

/// xorshift64*: a deterministic pseudo-random source for tests that shake
/// the parsers with generated input.
#[derive(Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
