//! A deterministic, bounded mutation test of the BIRD reply decoder and the typed
//! readings of replies, run by plain `cargo test`: the always-on little brother of
//! the `bird_replies` cargo-fuzz target (`scripts/fuzz.sh`). Transcripts of a real
//! BIRD 2.0.12 control socket are mutated (bit flips, byte edits, truncation,
//! insertion, deletion) and checked by `support/reply_checks.rs`. The PRNG is seeded
//! with a constant, so a failure replays. `write_fuzz_seeds` (ignored; run by
//! `scripts/fuzz.sh`) writes the transcripts as the fuzzer's seed corpus.

#[path = "../../../fuzz/mutate.rs"]
mod mutate;
#[path = "support/reply_checks.rs"]
mod reply_checks;

use mutate::{Rng, mutate};

/// Mutated inputs tried.
const ITERATIONS: u64 = 20_000;

/// What BIRD 2.0.12 sent for the commands tern-health uses (recorded from `bird -f`
/// with two static protocols and a BGP session, and from routers whose routes have
/// next hops; the last two shortened), plus log echoes and
/// errors. New transcripts go at the end, so the seeds already written keep their
/// names.
const TRANSCRIPTS: &[&str] = &[
    "0001 BIRD 2.0.12 ready.\n",
    "2002-Name       Proto      Table      State  Since         Info\n\
     1002-device1    Device     ---        up     16:52:05.778  \n \
     anycast4   Static     master4    up     16:52:05.778  \n \
     anycast4_prepend Static     master4    down   16:52:05.778  \n \
     uplink     BGP        ---        up     16:52:10.658  Established   \n\
     0000 \n",
    "2002-Name       Proto      Table      State  Since         Info\n\
     1002-anycast4   Static     master4    up     16:52:05.777  \n\
     0000 \n",
    "0009-anycast4: disabled\n0000 \n0008-anycast4: already disabled\n0000 \n",
    "0011-anycast4: enabled\n0000 \n0010-anycast4: already enabled\n0000 \n",
    "8003 No protocols match\n",
    "9001 syntax error, unexpected CF_SYM_UNDEFINED, expecting CF_SYM_KNOWN\n",
    "8001 Network not found\n",
    "1007-Table master4:\n 203.0.113.10/32      blackhole [anycast4 16:52:29.812] * (200)\n\
     1008-\tType: static univ\n0000 \n",
    "1007-Table master4:\n \
     203.0.113.10/32      unreachable [edge1 16:52:29.812 from 127.0.0.1] * (100) [AS65001i]\n\
     1008-\tType: BGP univ\n1012-\tBGP.origin: IGP\n \tBGP.as_path: 65001 65001 65001\n \
     \tBGP.next_hop: 127.0.0.1\n \tBGP.local_pref: 100\n\
     1007-                     unreachable [edge2 16:52:30.001 from 127.0.0.3] (100) [AS65002i]\n\
     0000 \n",
    "1000-BIRD 2.0.12\n1011-Router ID is 10.0.0.1\n Hostname is vm\n0013 Daemon is up and running\n",
    "+2026-11-24 16:52:05 <INFO> Started\r\n0011-anycast4: enabled\r\n0000 \r\n",
    // Routers with next hops: eBGP over a veth pair, then static routes on `lo`
    // (multipath, MPLS, device, three tables), then recursive BGP next hops with a
    // community list BIRD wraps onto a second line.
    "1007-Table master4:\n \
     10.77.100.10/32      unicast [edge2 20:19:39.418] * (100) [AS65002i]\n \
     \tvia 10.77.12.2 on to-edge2\n\
     1008-\tType: BGP univ\n1012-\tBGP.origin: IGP\n \tBGP.as_path: 65002\n \
     \tBGP.next_hop: 10.77.12.2\n \tBGP.local_pref: 100\n\
     1007-10.77.12.0/30        unicast [direct1 20:19:38.073] * (240)\n \tdev to-edge2\n\
     1008-\tType: device univ\n0000 \n",
    "1007-Table master4:\n \
     198.51.100.0/24      unreachable [igp4 20:18:50.031] * (200)\n \
     198.51.101.0/24      prohibited [igp4 20:18:50.031] * (200)\n \
     10.0.4.0/24          unicast [igp4 20:18:50.031] * (200)\n \
     \tvia 198.51.100.2 on lo onlink weight 3\n \
     \tvia 198.51.100.1 on lo onlink weight 1\n \
     10.0.5.0/24          unicast [igp4 20:18:50.031] * (200)\n \
     \tvia 198.51.100.1 on lo mpls 100/200 onlink\n \n \
     Table master6:\n \
     2001:db8::/32        unicast [static6 20:18:50.031] * (200)\n \tdev lo\n \
     2001:db8:1::/48      unicast [static6 20:18:50.031] * (200)\n \
     \tvia 2001:db8:ff::1 on lo onlink\n \n \
     Table extra4:\n \
     192.0.2.0/24         blackhole [extra 20:18:50.031] * (200)\n0000 \n",
    "1007-Table master4:\n \
     203.0.113.10/32      unicast [edge1 20:19:25.521 from 127.0.0.1] * (100/?) [AS65001i]\n \
     \tvia 198.51.100.1 on lo onlink\n\
     1008-\tType: BGP univ\n1012-\tBGP.origin: IGP\n \tBGP.as_path: 65001\n \
     \tBGP.community: (65001,1) (65001,2) (65001,3) (65001,4) (65001,5) (65001,6) (65001,7)\n \
     \t\t(65001,8) (65001,9)\n \tBGP.large_community: (65001, 1, 2)\n\
     1007-                     unicast [edge2 20:19:24.122 from 127.0.0.3] (100/?) [AS65002i]\n \
     \tvia 198.51.100.1 on lo onlink\n\
     1008-\tType: BGP univ\n0000 \n",
];

/// The transcripts as inputs, with a few chunk sizes each (the first byte).
fn samples() -> Vec<Vec<u8>> {
    TRANSCRIPTS
        .iter()
        .flat_map(|t| [0u8, 4, 63].map(|split| [&[split][..], t.as_bytes()].concat()))
        .collect()
}

#[test]
fn transcripts_pass_the_checks_and_decode() {
    for input in samples() {
        reply_checks::check_input(&input);
        let mut decoder = tern_health::bird::ReplyDecoder::new();
        decoder
            .handle_bytes(&input[1..])
            .expect("a real transcript decodes");
        let reply = decoder.poll_reply().expect("a whole reply");
        assert!(!decoder.is_mid_reply());
        if reply.lines()[0].text.starts_with("Table ") {
            let routes = tern_health::bird::Route::from_reply(&reply).expect("real routes parse");
            assert!(!routes.is_empty());
        }
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let samples = samples();
    let mut rng = Rng(0xb12d_c0de_0000_0006);
    for i in 0..ITERATIONS {
        let mut input = samples[i as usize % samples.len()].clone();
        mutate(&mut rng, &mut input);
        reply_checks::check_input(&input);
    }
}

/// Writes [`samples`] into `$TERN_FUZZ_SEED_DIR` (run by `scripts/fuzz.sh`).
#[test]
#[ignore = "writes the fuzzer's seed corpus; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var_os("TERN_FUZZ_SEED_DIR").expect("TERN_FUZZ_SEED_DIR is set");
    for (i, input) in samples().iter().enumerate() {
        std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}")), input)
            .expect("write seed");
    }
}
