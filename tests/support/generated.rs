//! Deterministic pseudo-random content of any size, produced on the fly so tests and
//! measurements can move hundreds of MiB without holding them in memory.

#![allow(dead_code)] // The conformance tests and the transfer example use different parts.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, ReadBuf};

/// Maximum bytes produced per read, so one read never allocates more than this.
const MAX_READ: usize = 256 * 1024;

/// An [`AsyncRead`] of `size` bytes determined by `seed`. Byte `i` depends only on `seed` and
/// `i`, so the content does not depend on how the reads are split.
#[derive(Debug, Clone)]
pub struct GeneratedContent {
    seed: u64,
    position: u64,
    size: u64,
}

impl GeneratedContent {
    pub fn new(seed: u64, size: u64) -> Self {
        Self {
            seed,
            position: 0,
            size,
        }
    }

    /// Fills `out` with the bytes that start at the current position and advances it.
    fn fill(&mut self, out: &mut [u8]) {
        let mut written = 0;
        while written < out.len() {
            let index = self.position + written as u64;
            let word = splitmix64(self.seed ^ (index / 8)).to_le_bytes();
            let start = (index % 8) as usize;
            let len = (8 - start).min(out.len() - written);
            out[written..written + len].copy_from_slice(&word[start..start + len]);
            written += len;
        }
        self.position += out.len() as u64;
    }

    /// SHA-256 (hex) of the whole content, computed by generating it once more.
    pub fn sha256_hex(seed: u64, size: u64) -> String {
        use sha2::Digest as _;
        let mut generator = Self::new(seed, size);
        let mut hasher = sha2::Sha256::new();
        let mut buffer = vec![0u8; MAX_READ];
        while generator.position < size {
            let len = MAX_READ.min((size - generator.position) as usize);
            generator.fill(&mut buffer[..len]);
            hasher.update(&buffer[..len]);
        }
        format!("{:x}", hasher.finalize())
    }
}

impl AsyncRead for GeneratedContent {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let remaining = self.size - self.position;
        let len = (buf.remaining() as u64).min(remaining).min(MAX_READ as u64) as usize;
        let out = buf.initialize_unfilled_to(len);
        self.fill(out);
        buf.advance(len);
        Poll::Ready(Ok(()))
    }
}

/// Mixes `x` with the SplitMix64 finalizer, a fast bijection on `u64` with well-spread output.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
