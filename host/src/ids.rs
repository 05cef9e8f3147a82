//! Snowflake id generation. The 10 instance bits are random per host process, so two hosts
//! sharing one Docker engine (tests, demos) do not mint the same container names.

use ferry_common::TaskId;
use std::sync::Mutex;

pub struct IdGen {
    instance: u16,
    last: Mutex<(u64, u16)>,
}

impl IdGen {
    pub fn new() -> IdGen {
        IdGen {
            instance: rand::random::<u16>() & 0x3ff,
            last: Mutex::new((0, 0)),
        }
    }

    pub fn next(&self) -> TaskId {
        let now = ferry_common::time::now_ms().max(0) as u64;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (ms, seq) = if now > last.0 {
            (now, 0)
        } else if last.1 < 0xfff {
            (last.0, last.1 + 1)
        } else {
            // 4096 ids in one millisecond: borrow from the next one rather than repeat.
            (last.0 + 1, 0)
        };
        *last = (ms, seq);
        TaskId::snowflake(ms, self.instance, seq)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_and_increasing() {
        let g = super::IdGen::new();
        let ids: Vec<_> = (0..10_000).map(|_| g.next()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
