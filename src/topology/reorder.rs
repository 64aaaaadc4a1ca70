//! Stage 2's input order: items from many input partitions, released in (event time, origin)
//! order once the watermark passes them. Every item at or before the watermark has arrived (its
//! input partition's marker said so), so the order in which the detectors see them is the same
//! however the input was spread over instances and however the network interleaved them.
//!
//! Bounded: past `max_items`, the oldest item is released early and counted
//! (`forced`), which costs determinism only for that item, never memory.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Sort key: (event time, input partition, offset, index in record, arrival sequence).
type Key = (i64, i32, i64, u32, u64);

struct Entry<T> {
    key: Key,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

pub struct Reorder<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    max_items: usize,
    seq: u64,
    forced: u64,
}

impl<T> Reorder<T> {
    pub fn new(max_items: usize) -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            max_items: max_items.max(1),
            seq: 0,
            forced: 0,
        }
    }

    /// Adds an item; when the buffer is full, returns the oldest one to process now.
    pub fn push(&mut self, time: i64, origin: (i32, i64, u32), item: T) -> Option<T> {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            key: (time, origin.0, origin.1, origin.2, self.seq),
            item,
        }));
        if self.heap.len() > self.max_items {
            self.forced += 1;
            return self.heap.pop().map(|Reverse(e)| e.item);
        }
        None
    }

    /// The next item at or before `watermark`, oldest first.
    pub fn pop_until(&mut self, watermark: i64) -> Option<T> {
        if self
            .heap
            .peek()
            .is_some_and(|Reverse(e)| e.key.0 <= watermark)
        {
            return self.heap.pop().map(|Reverse(e)| e.item);
        }
        None
    }

    /// Everything still buffered, oldest first (shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.heap.pop().map(|Reverse(e)| e.item))
    }

    /// Every buffered item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|Reverse(e)| &e.item)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Items released before the watermark reached them because the buffer was full.
    pub fn forced(&self) -> u64 {
        self.forced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_time_then_origin_order_up_to_the_watermark() {
        let mut r = Reorder::new(10);
        r.push(30, (0, 5, 0), "c");
        r.push(10, (1, 9, 0), "b");
        r.push(10, (0, 7, 0), "a");
        r.push(50, (0, 1, 0), "d");
        let mut out = Vec::new();
        while let Some(x) = r.pop_until(30) {
            out.push(x);
        }
        assert_eq!(out, ["a", "b", "c"]);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn full_buffer_releases_the_oldest_and_counts_it() {
        let mut r = Reorder::new(2);
        assert_eq!(r.push(5, (0, 0, 0), 5), None);
        assert_eq!(r.push(3, (0, 1, 0), 3), None);
        assert_eq!(r.push(9, (0, 2, 0), 9), Some(3));
        assert_eq!(r.forced(), 1);
        assert_eq!(r.drain().collect::<Vec<_>>(), [5, 9]);
    }
}
