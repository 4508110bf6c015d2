//! Which edge to dial next: the primary URL first, then the fallback URLs in a random
//! order (another domain, another POP), and after a successful connection the URL that
//! worked, unless the server sent the client elsewhere.
//!
//! ```text
//!  round = [last good (unless avoided)] + [primary] + shuffle(fallbacks), each once
//!  next() ─▶ round.pop_front() ─ empty? ─▶ a new round
//!  connected(i) ─▶ last good = i, new round     avoid(i) ─▶ i goes last in the next round
//! ```

use std::collections::VecDeque;

use rand::Rng;
use rand::seq::SliceRandom;

/// The rotation over `count` URLs; index 0 is the primary.
#[derive(Debug)]
pub(crate) struct Hosts {
    count: usize,
    round: VecDeque<usize>,
    last_good: Option<usize>,
    avoid: Option<usize>,
    /// The URL being tried (or in use).
    current: usize,
}

impl Hosts {
    /// A rotation over `count` URLs (at least one).
    pub(crate) fn new(count: usize) -> Self {
        Self {
            count: count.max(1),
            round: VecDeque::new(),
            last_good: None,
            avoid: None,
            current: 0,
        }
    }

    /// The index of the URL to dial next.
    pub(crate) fn next(&mut self, rng: &mut impl Rng) -> usize {
        if self.round.is_empty() {
            self.new_round(rng);
        }
        self.current = self.round.pop_front().unwrap_or(0);
        self.current
    }

    /// The URL being used or tried.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// The connection to the current URL succeeded: it goes first from now on.
    pub(crate) fn connected(&mut self) {
        self.last_good = Some(self.current);
        self.avoid = None;
        self.round.clear();
    }

    /// The server at the current URL asked the client to go elsewhere (it drains).
    pub(crate) fn avoid_current(&mut self) {
        self.avoid = Some(self.current);
        if self.last_good == Some(self.current) {
            self.last_good = None;
        }
        self.round.clear();
    }

    fn new_round(&mut self, rng: &mut impl Rng) {
        let mut fallbacks: Vec<usize> = (1..self.count).collect();
        fallbacks.shuffle(rng);
        let order = self
            .last_good
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

    fn take(hosts: &mut Hosts, rng: &mut StdRng, n: usize) -> Vec<usize> {
        (0..n).map(|_| hosts.next(rng)).collect()
    }

    #[test]
    fn primary_first_then_every_fallback_once_per_round_in_random_orders() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut hosts = Hosts::new(4);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..20 {
            let round = take(&mut hosts, &mut rng, 4);
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
        let mut hosts = Hosts::new(3);
        while hosts.next(&mut rng) != 2 {}
        hosts.connected();
        let round = take(&mut hosts, &mut rng, 3);
        assert_eq!(round[0], 2);
        assert_eq!(round[1], 0);
        // Connected to 2 again, then told to go elsewhere: 2 comes last.
        while hosts.next(&mut rng) != 2 {}
        hosts.connected();
        hosts.avoid_current();
        let round = take(&mut hosts, &mut rng, 3);
        assert_eq!(round, vec![0, 1, 2]);
    }

    #[test]
    fn a_single_url_is_always_the_one() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut hosts = Hosts::new(1);
        hosts.avoid_current();
        assert_eq!(take(&mut hosts, &mut rng, 5), vec![0; 5]);
    }
}
