//! Where a subscription resumes: the pure continuity decision of DESIGN §2.4.

use tern_link::{Continuity, Position, Serial};

use crate::store::ChannelInfo;

/// Where delivery starts for a subscriber that already has `after`.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    /// The first serial that will be delivered.
    pub next: Serial,
    /// Whether that is exactly the serial after `after`.
    pub continuity: Continuity,
}

/// Decides where a subscriber holding `after` resumes in a channel described by
/// `info`. A position is honoured only if the log still holds that exact
/// `(epoch, serial)` history and everything after it; otherwise the answer says
/// `Lost` with the reason and the first serial that will come, never a silent gap.
pub fn resolve(info: &ChannelInfo, after: Option<Position>) -> Resume {
    let end = info.last.map_or(Serial::FIRST, |p| p.serial.next());
    let first_available = info.first_serial.unwrap_or(end);
    let lost = |next: Serial, reason: String| Resume {
        next,
        continuity: Continuity::Lost { reason },
    };
    let Some(after) = after else {
        return Resume {
            next: first_available,
            continuity: Continuity::Kept,
        };
    };
    let Some(idx) = info.epochs.iter().position(|(e, _)| *e == after.epoch) else {
        return lost(
            first_available,
            format!("epoch {} is unknown to this log", after.epoch),
        );
    };
    let epoch_start = info.epochs[idx].1;
    if let Some(&(next_epoch, next_start)) = info.epochs.get(idx + 1)
        && after.serial >= next_start
    {
        return lost(
            next_start.max(first_available),
            format!(
                "serials from {next_start} on were reassigned in epoch {next_epoch} after a failure; {after} is no longer valid"
            ),
        );
    }
    if after.serial < epoch_start {
        return lost(
            first_available,
            format!("serial {} is outside epoch {}", after.serial, after.epoch),
        );
    }
    if after.serial >= end {
        return lost(
            end,
            format!("position {after} is ahead of the log's last position"),
        );
    }
    let next = after.serial.next();
    if next < first_available {
        return lost(
            first_available,
            format!(
                "retention removed serials {next} to {}",
                first_available.get() - 1
            ),
        );
    }
    Resume {
        next,
        continuity: Continuity::Kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_link::Epoch;

    fn s(n: u64) -> Serial {
        Serial::new(n).expect("non-zero in tests")
    }
    fn p(e: u64, n: u64) -> Position {
        Position {
            epoch: Epoch(e),
            serial: s(n),
        }
    }

    fn info() -> ChannelInfo {
        // Epoch 10 held 1..=8 (9 and 10 were lost in a crash), epoch 11 from 9 on.
        ChannelInfo {
            first_serial: Some(s(3)),
            last: Some(p(11, 20)),
            epochs: vec![(Epoch(10), s(1)), (Epoch(11), s(9))],
        }
    }

    #[test]
    fn exact_positions_continue() {
        assert_eq!(resolve(&info(), Some(p(10, 8))).next, s(9));
        assert_eq!(
            resolve(&info(), Some(p(11, 20))).continuity,
            Continuity::Kept
        );
        assert_eq!(resolve(&info(), Some(p(11, 20))).next, s(21));
        assert_eq!(resolve(&info(), None).next, s(3));
    }

    #[test]
    fn replaced_history_is_reported() {
        let r = resolve(&info(), Some(p(10, 10)));
        assert_eq!(r.next, s(9));
        assert!(matches!(r.continuity, Continuity::Lost { .. }));
    }

    #[test]
    fn retention_gap_unknown_epoch_and_future_are_reported() {
        let r = resolve(&info(), Some(p(10, 1)));
        assert_eq!(r.next, s(3));
        assert!(matches!(r.continuity, Continuity::Lost { .. }));
        assert!(matches!(
            resolve(&info(), Some(p(99, 1))).continuity,
            Continuity::Lost { .. }
        ));
        let r = resolve(&info(), Some(p(11, 25)));
        assert_eq!(r.next, s(21));
        assert!(matches!(r.continuity, Continuity::Lost { .. }));
    }
}
