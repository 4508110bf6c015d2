//! Which edge to dial next: the primary URL first, then the fallback URLs in a random
//! order (another domain, another POP). After a successful connection the URL that
//! worked goes first — for a fallback, only for `fallback_retry` (10 minutes by
//! default), after which the primary is tried first again, as in other realtime SDKs
//! — unless the server sent the client elsewhere. Time is an argument: nothing here
//! reads a clock.
//!
//! ```text
//!  round = [last good (unless avoided or a fallback past its retry time)]
//!          + [primary] + shuffle(fallbacks), each once
//!  next(now) ─▶ round.pop_front() ─ empty? ─▶ a new round
//!  connected(now) ─▶ last good = current (a fallback: until now + fallback_retry), new round
//!  avoid_current() ─▶ current goes last in the next round
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::SliceRandom;

/// The URL that connected last, remembered to go first.
#[derive(Debug)]
struct Good {
    index: usize,
    /// For a fallback: when the primary goes first again. `None` for the primary.
    until: Option<Instant>,
}

/// The rotation over `count` URLs; index 0 is the primary.
#[derive(Debug)]
pub(crate) struct Hosts {
    count: usize,
    fallback_retry: Duration,
    round: VecDeque<usize>,
    last_good: Option<Good>,
    avoid: Option<usize>,
    /// The URL being tried (or in use).
    current: usize,
}

impl Hosts {
    /// A rotation over `count` URLs (at least one); a fallback that worked goes first
    /// for `fallback_retry`.
    pub(crate) fn new(count: usize, fallback_retry: Duration) -> Self {
        Self {
            count: count.max(1),
            fallback_retry,
            round: VecDeque::new(),
            last_good: None,
            avoid: None,
            current: 0,
        }
    }

    /// The index of the URL to dial next.
    pub(crate) fn next(&mut self, now: Instant, rng: &mut impl Rng) -> usize {
        if self.round.is_empty() {
            self.new_round(now, rng);
        }
        self.current = self.round.pop_front().unwrap_or(0);
        self.current
    }

    /// The URL being used or tried.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// The connection to the current URL succeeded at `now`: it goes first from now
    /// on (a fallback only until `now + fallback_retry`).
    pub(crate) fn connected(&mut self, now: Instant) {
        let until = (self.current != 0).then(|| now + self.fallback_retry);
        self.last_good = Some(Good {
            index: self.current,
            until,
        });
        self.avoid = None;
        self.round.clear();
    }

    /// The server at the current URL asked the client to go elsewhere (it drains).
    pub(crate) fn avoid_current(&mut self) {
        self.avoid = Some(self.current);
        if self.last_good.as_ref().map(|g| g.index) == Some(self.current) {
            self.last_good = None;
        }
        self.round.clear();
    }

    fn new_round(&mut self, now: Instant, rng: &mut impl Rng) {
        if self
            .last_good
            .as_ref()
            .and_then(|g| g.until)
            .is_some_and(|until| until <= now)
        {
            // The remembered fallback had its time: the primary gets another chance.
            self.last_good = None;
        }
        let mut fallbacks: Vec<usize> = (1..self.count).collect();
        fallbacks.shuffle(rng);
        let order = self
            .last_good
            .as_ref()
            .map(|g| g.index)
            .into_iter()
            .chain(std::iter::once(0))
            .chain(fallbacks);
        for index in order {
            if !self.round.contains(&index) && Some(index) != self.avoid {
                self.round.push_back(index);
            }
        }
        // The avoided URL is still worth a try once every other one failed.
        if let Some(avoided) = self.avoid.take() {
            self.round.push_back(avoided);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const RETRY: Duration = Duration::from_secs(600);

    fn take(hosts: &mut Hosts, now: Instant, rng: &mut StdRng, n: usize) -> Vec<usize> {
        (0..n).map(|_| hosts.next(now, rng)).collect()
    }

    #[test]
    fn primary_first_then_every_fallback_once_per_round_in_random_orders() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut hosts = Hosts::new(4, RETRY);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..20 {
            let round = take(&mut hosts, now, &mut rng, 4);
            assert_eq!(round[0], 0);
            let mut sorted = round.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3]);
            orders.insert(round);
        }
        assert!(orders.len() > 1, "fallbacks always in the same order");
    }

    #[test]
    fn the_url_that_worked_goes_first_until_the_server_sends_the_client_elsewhere() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut hosts = Hosts::new(3, RETRY);
        while hosts.next(now, &mut rng) != 2 {}
        hosts.connected(now);
        let round = take(&mut hosts, now, &mut rng, 3);
        assert_eq!(round[0], 2);
        assert_eq!(round[1], 0);
        // Connected to 2 again, then told to go elsewhere: 2 comes last.
        while hosts.next(now, &mut rng) != 2 {}
        hosts.connected(now);
        hosts.avoid_current();
        let round = take(&mut hosts, now, &mut rng, 3);
        assert_eq!(round, vec![0, 1, 2]);
    }

    #[test]
    fn a_fallback_that_worked_goes_first_only_for_the_retry_time() {
        let mut rng = StdRng::seed_from_u64(4);
        let start = Instant::now();
        let mut hosts = Hosts::new(3, RETRY);
        while hosts.next(start, &mut rng) != 1 {}
        hosts.connected(start);
        // Just before the retry time, every new round starts with the fallback.
        let before = start + RETRY - Duration::from_millis(1);
        for _ in 0..3 {
            assert_eq!(take(&mut hosts, before, &mut rng, 3)[..2], [1, 0]);
        }
        // From the retry time on, the primary goes first and the fallback takes its
        // chance among the others.
        let after = start + RETRY;
        let mut seconds = std::collections::HashSet::new();
        for _ in 0..20 {
            let round = take(&mut hosts, after, &mut rng, 3);
            assert_eq!(round[0], 0, "{round:?}");
            seconds.insert(round[1]);
        }
        assert_eq!(seconds.len(), 2, "the fallbacks are shuffled again");
    }

    #[test]
    fn the_primary_that_worked_is_remembered_for_good() {
        let mut rng = StdRng::seed_from_u64(5);
        let start = Instant::now();
        let mut hosts = Hosts::new(3, RETRY);
        while hosts.next(start, &mut rng) != 1 {}
        hosts.connected(start);
        // Back on the primary before the fallback's time ran out.
        while hosts.next(start, &mut rng) != 0 {}
        hosts.connected(start);
        let much_later = start + RETRY * 100;
        assert_eq!(take(&mut hosts, much_later, &mut rng, 3)[0], 0);
    }

    #[test]
    fn a_single_url_is_always_the_one() {
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        let mut hosts = Hosts::new(1, RETRY);
        hosts.avoid_current();
        assert_eq!(take(&mut hosts, now, &mut rng, 5), vec![0; 5]);
    }
}
