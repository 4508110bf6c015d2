//! Where a subscription starts: the pure continuity decision of DESIGN §2.4.

use tern_link::{Continuity, Position, Serial, SubscribeFrom};

use crate::store::ChannelInfo;

/// Where delivery starts for a subscriber, and what came before it.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    /// The first serial that will be delivered.
    pub next: Serial,
    /// The position assigned to serial `next - 1`, even if retention removed it (see
    /// [`ChannelInfo::assigned_position`]); `None` when `next` is the first serial.
    pub previous: Option<Position>,
    /// Whether `next` is exactly where the subscriber asked to start.
    pub continuity: Continuity,
}

/// Decides where a subscriber asking for `from` starts in a channel described by
/// `info`.
///
/// - [`SubscribeFrom::Start`]: the first stored serial (the next one to be assigned
///   when nothing is stored).
/// - [`SubscribeFrom::Latest`]: the next serial to be assigned; nothing stored is
///   replayed.
/// - [`SubscribeFrom::After`]: the serial after that position, honoured only if the
///   log still holds that exact `(epoch, serial)` history and everything after it;
///   otherwise the answer says `Lost` with the reason and the first serial that will
///   come, never a silent gap.
pub fn resolve(info: &ChannelInfo, from: SubscribeFrom) -> Resume {
    let end = info.last.map_or(Serial::FIRST, |p| p.serial.next());
    let first_available = info.first_serial.unwrap_or(end);
    let (next, continuity) = match from {
        SubscribeFrom::Start => (first_available, Continuity::Kept),
        SubscribeFrom::Latest => (end, Continuity::Kept),
        SubscribeFrom::After(after) => resolve_after(info, after, end, first_available),
    };
    let previous = Serial::new(next.get() - 1).and_then(|prev| info.assigned_position(prev));
    Resume {
        next,
        previous,
        continuity,
    }
}

/// [`resolve`] for a subscriber that has `after`.
fn resolve_after(
    info: &ChannelInfo,
    after: Position,
    end: Serial,
    first_available: Serial,
) -> (Serial, Continuity) {
    let lost = |next: Serial, reason: String| (next, Continuity::Lost { reason });
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
    (next, Continuity::Kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_link::Epoch;
    use tern_link::SubscribeFrom::{After, Latest, Start};

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
        assert_eq!(resolve(&info(), After(p(10, 8))).next, s(9));
        assert_eq!(
            resolve(&info(), After(p(11, 20))).continuity,
            Continuity::Kept
        );
        assert_eq!(resolve(&info(), After(p(11, 20))).next, s(21));
        assert_eq!(resolve(&info(), Start).next, s(3));
    }

    #[test]
    fn replaced_history_is_reported() {
        let r = resolve(&info(), After(p(10, 10)));
        assert_eq!(r.next, s(9));
        assert!(matches!(r.continuity, Continuity::Lost { .. }));
    }

    #[test]
    fn retention_gap_unknown_epoch_and_future_are_reported() {
        let r = resolve(&info(), After(p(10, 1)));
        assert_eq!(r.next, s(3));
        assert!(matches!(r.continuity, Continuity::Lost { .. }));
        assert!(matches!(
            resolve(&info(), After(p(99, 1))).continuity,
            Continuity::Lost { .. }
        ));
        let r = resolve(&info(), After(p(11, 25)));
        assert_eq!(r.next, s(21));
        assert!(matches!(r.continuity, Continuity::Lost { .. }));
    }

    #[test]
    fn previous_is_the_position_before_next() {
        // Continuing from an exact position: previous is that position.
        assert_eq!(resolve(&info(), After(p(10, 8))).previous, Some(p(10, 8)));
        assert_eq!(resolve(&info(), After(p(11, 20))).previous, Some(p(11, 20)));
        // From the start: serial 2 was removed by retention but its position is known.
        assert_eq!(resolve(&info(), Start).previous, Some(p(10, 2)));
        // A stale position: delivery restarts at 9, whose predecessor 8 is epoch 10's.
        let r = resolve(&info(), After(p(10, 10)));
        assert_eq!((r.next, r.previous), (s(9), Some(p(10, 8))));
        // Ahead of the log: continues at the end, after the last message.
        assert_eq!(resolve(&info(), After(p(11, 25))).previous, Some(p(11, 20)));
    }

    #[test]
    fn latest_starts_after_the_last_message() {
        let r = resolve(&info(), Latest);
        assert_eq!(r.next, s(21));
        assert_eq!(r.previous, Some(p(11, 20)));
        assert_eq!(r.continuity, Continuity::Kept);
        let empty = resolve(&ChannelInfo::default(), Latest);
        assert_eq!((empty.next, empty.previous), (Serial::FIRST, None));
        let start = resolve(&ChannelInfo::default(), Start);
        assert_eq!((start.next, start.previous), (Serial::FIRST, None));
        // Everything removed by retention: the last position is still known, and
        // continuing after it loses nothing.
        let expired = ChannelInfo {
            first_serial: None,
            ..info()
        };
        let r = resolve(&expired, Latest);
        assert_eq!((r.next, r.previous), (s(21), Some(p(11, 20))));
        let again = resolve(&expired, After(p(11, 20)));
        assert_eq!((again.next, again.continuity), (s(21), Continuity::Kept));
    }

    #[test]
    fn stored_position_follows_epoch_ranges() {
        let info = info();
        assert_eq!(
            info.assigned_position(s(2)),
            Some(p(10, 2)),
            "removed by retention"
        );
        assert_eq!(info.assigned_position(s(3)), Some(p(10, 3)));
        assert_eq!(info.assigned_position(s(8)), Some(p(10, 8)));
        assert_eq!(info.assigned_position(s(9)), Some(p(11, 9)));
        assert_eq!(info.assigned_position(s(20)), Some(p(11, 20)));
        assert_eq!(info.assigned_position(s(21)), None, "not assigned yet");
    }
}
