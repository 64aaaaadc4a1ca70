//! The evidence ring: the most recent (key, value, event id) observations of a detector, from
//! which an alert draws its samples.
//!
//! Keeping samples per key would multiply per-key memory by the sample count; a ring of fixed
//! size shared by all keys of a detector keeps samples for the keys that are busy right now, which
//! are the ones that alert. Slots reuse their string buffers, so after warm-up a push allocates
//! nothing.

#[derive(Default)]
struct Slot {
    key: u64,
    time: i64,
    value: String,
    event_uid: String,
}

pub struct EvidenceRing {
    slots: Vec<Slot>,
    next: usize,
    cap: usize,
}

impl EvidenceRing {
    pub fn new(cap: usize) -> Self {
        EvidenceRing {
            slots: Vec::new(),
            next: 0,
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, key: u64, time: i64, value: &str, event_uid: Option<&str>) {
        if self.slots.len() < self.cap {
            self.slots.push(Slot::default());
        }
        let slot = &mut self.slots[self.next];
        slot.key = key;
        slot.time = time;
        slot.value.clear();
        slot.value.push_str(value);
        slot.event_uid.clear();
        slot.event_uid.push_str(event_uid.unwrap_or(""));
        self.next = (self.next + 1) % self.cap;
    }

    /// Up to `max` distinct values and `max` event ids recorded for `key` at or after `since`,
    /// oldest first.
    pub fn samples(&self, key: u64, since: i64, max: usize) -> (Vec<String>, Vec<String>) {
        let mut values: Vec<String> = Vec::new();
        let mut uids: Vec<String> = Vec::new();
        let n = self.slots.len();
        // Oldest slot is `next` once the ring has wrapped, else 0.
        let start = if n < self.cap { 0 } else { self.next };
        for i in 0..n {
            let slot = &self.slots[(start + i) % n];
            if slot.key != key || slot.time < since {
                continue;
            }
            if values.len() < max && !values.contains(&slot.value) {
                values.push(slot.value.clone());
            }
            if uids.len() < max && !slot.event_uid.is_empty() {
                uids.push(slot.event_uid.clone());
            }
            if values.len() >= max && uids.len() >= max {
                break;
            }
        }
        (values, uids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_by_key_and_time_oldest_first() {
        let mut r = EvidenceRing::new(4);
        r.push(1, 10, "a", Some("e1"));
        r.push(2, 11, "x", None);
        r.push(1, 12, "b", Some("e2"));
        r.push(1, 13, "a", Some("e3"));
        r.push(1, 14, "c", Some("e4")); // overwrites the oldest ("a" at 10)
        let (v, u) = r.samples(1, 0, 10);
        assert_eq!(v, ["b", "a", "c"]);
        assert_eq!(u, ["e2", "e3", "e4"]);
        let (v, _) = r.samples(1, 13, 10);
        assert_eq!(v, ["a", "c"]);
        let (v, u) = r.samples(1, 0, 1);
        assert_eq!((v.len(), u.len()), (1, 1));
    }
}
