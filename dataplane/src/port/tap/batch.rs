//! Receive buffers for [`Tap::read_batch`](super::Tap::read_batch).

use super::VnetHdr;

/// A set of receive buffers filled by [`Tap::read_batch`](super::Tap::read_batch).
pub struct RxBatch {
    pub(super) bufs: Vec<Box<[u8]>>,
    pub(super) hdrs: Vec<VnetHdr>,
    pub(super) lens: Vec<usize>,
    pub(super) count: usize,
}

impl RxBatch {
    /// `frames` buffers of `buf_len` bytes each ([`MAX_FRAME_LEN`](super::MAX_FRAME_LEN) holds any frame).
    pub fn new(frames: usize, buf_len: usize) -> RxBatch {
        RxBatch {
            bufs: (0..frames)
                .map(|_| vec![0u8; buf_len].into_boxed_slice())
                .collect(),
            hdrs: vec![VnetHdr::default(); frames],
            lens: vec![0; frames],
            count: 0,
        }
    }

    /// Number of frames held since the last read.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the last read returned no frame.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Capacity in frames.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Frame `i` of the last read, with its header.
    pub fn get(&self, i: usize) -> Option<(&VnetHdr, &[u8])> {
        if i >= self.count {
            return None;
        }
        let hdr = self.hdrs.get(i)?;
        let buf = self.bufs.get(i)?;
        let len = *self.lens.get(i)?;
        Some((hdr, buf.get(..len)?))
    }

    /// The frames of the last read, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&VnetHdr, &[u8])> {
        (0..self.count).filter_map(move |i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_batch_get_is_bounded() {
        let b = RxBatch::new(2, 64);
        assert_eq!(b.capacity(), 2);
        assert!(b.is_empty());
        assert!(b.get(0).is_none());
        assert_eq!(b.iter().count(), 0);
    }
}
