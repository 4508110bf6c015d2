//! The anycast controller against real BIRD daemons (Debian `bird2`, installed by
//! `scripts/setup.sh`): each test starts an "edge" BIRD holding the anycast prefix in
//! two static protocols and a "router" BIRD, joined by an eBGP session on loopback
//! (edge 127.0.0.1, router 127.0.0.2, unprivileged ports picked free), and reads the
//! router's table through tern-health's own client.
//!
//! BIRD needs no root for this (no kernel protocol, ports above 1024, sockets in a
//! temporary directory), so these tests never skip: a missing `bird` fails them with a
//! message naming `scripts/setup.sh`. Neither BIRD has a kernel protocol, so nothing
//! reaches the host's routing table; each test checks that at the end. One more test
//! starts a lone BIRD with static routes of every shape (gateways, multipath, device,
//! MPLS, unreachable, prohibit, blackhole, two tables) and reads them back. Every wait
//! is bounded; the daemons are killed when a test ends, passing or not.
//!
//! ```text
//!   AnycastController ──socket──▶ edge BIRD (anycast4, anycast4_prepend: static 203.0.113.10/32)
//!                                     │ eBGP AS65001 → AS65000, 127.0.0.1:p1 ↔ 127.0.0.2:p2
//!   test ──BirdClient──socket──▶ router BIRD: show route for 203.0.113.10/32 all
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tern_health::bird::{
    BirdError, Destination, NextHop, Prefix, ProtocolName, ProtocolState, Route,
};
use tern_health::testing::{ANYCAST, Bird, EDGE_AS, Pair, WAIT, assert_host_table_untouched};
use tern_health::{
    Announcement, AnycastAction, ControllerError, HealthState, Reconciled, StaticSiteCount,
};

fn applied(r: &Reconciled) -> Option<Announcement> {
    match r {
        Reconciled::Applied { to, .. } => Some(*to),
        _ => None,
    }
}

#[tokio::test]
async fn announce_deprefer_and_withdraw_reach_the_router() {
    let pair = Pair::start().await;
    pair.wait_withdrawn().await;
    let mut c = pair.controller(
        AnycastAction::Deprefer,
        1,
        Arc::new(StaticSiteCount::new(3)),
    );

    let r = c.reconcile(HealthState::Up).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Announce), "{r:?}");
    pair.wait_as_path(&[EDGE_AS]).await;
    let mut edge = pair.edge.client();
    let own = edge
        .show_route_protocol(&ProtocolName::from_static("anycast4"))
        .await
        .expect("edge answers");
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(
        (own[0].network.as_str(), &own[0].destination),
        (ANYCAST, &Destination::Blackhole)
    );
    assert_eq!(
        c.reconcile(HealthState::Up).await.expect("reconciles"),
        Reconciled::InSync(Announcement::Announce)
    );

    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Deprefer), "{r:?}");
    pair.wait_as_path(&[EDGE_AS, EDGE_AS, EDGE_AS]).await;

    let r = c.reconcile(HealthState::Up).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Announce), "{r:?}");
    pair.wait_as_path(&[EDGE_AS]).await;

    let r = c
        .reconcile(HealthState::Disabled)
        .await
        .expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Withdraw), "{r:?}");
    pair.wait_withdrawn().await;

    let m = c.metrics();
    assert_eq!((m.bird_errors_total, m.guard_holds_total), (0, 0));
    assert_eq!(m.announcing, Some(Announcement::Withdraw));
    assert_host_table_untouched();
}

#[tokio::test]
async fn withdraw_mode_takes_the_prefix_away() {
    let pair = Pair::start().await;
    let mut c = pair.controller(
        AnycastAction::Withdraw,
        1,
        Arc::new(StaticSiteCount::new(2)),
    );
    c.reconcile(HealthState::Up).await.expect("reconciles");
    pair.wait_as_path(&[EDGE_AS]).await;
    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Withdraw), "{r:?}");
    pair.wait_withdrawn().await;
    assert_host_table_untouched();
}

#[tokio::test]
async fn a_restarted_edge_bird_is_put_back_and_an_unreachable_one_freezes() {
    let mut pair = Pair::start().await;
    let mut c = pair.controller(
        AnycastAction::Withdraw,
        1,
        Arc::new(StaticSiteCount::new(3)),
    );
    c.reconcile(HealthState::Up).await.expect("reconciles");
    pair.wait_as_path(&[EDGE_AS]).await;

    pair.edge.kill();
    pair.wait_withdrawn().await;
    let e = c
        .reconcile(HealthState::Up)
        .await
        .expect_err("BIRD is gone");
    assert!(
        matches!(e, ControllerError::Bird(ref b) if b.is_retryable()),
        "{e}"
    );
    assert!(c.metrics().frozen);
    assert_eq!(c.metrics().bird_errors_total, 1);

    // BIRD comes back with its config's defaults: nothing announced.
    pair.edge.restart().await;
    let r = c.reconcile(HealthState::Up).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Announce), "{r:?}");
    assert!(!c.metrics().frozen);
    pair.wait_established().await;
    pair.wait_as_path(&[EDGE_AS]).await;
    assert_host_table_untouched();
}

#[tokio::test]
async fn the_guard_keeps_the_last_site_announcing() {
    let pair = Pair::start().await;
    let sites = Arc::new(StaticSiteCount::new(1));
    let mut c = pair.controller(AnycastAction::Withdraw, 1, Arc::clone(&sites));
    c.reconcile(HealthState::Up).await.expect("reconciles");
    pair.wait_as_path(&[EDGE_AS]).await;

    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(
        r,
        Reconciled::GuardHeld {
            announcing_sites: 1,
            min_announcing: 1
        }
    );
    let mut edge = pair.edge.client();
    let row = edge
        .show_protocol(&ProtocolName::from_static("anycast4"))
        .await
        .expect("edge answers");
    assert_eq!(
        row.state,
        ProtocolState::Up,
        "the guard left anycast4 enabled"
    );
    pair.wait_as_path(&[EDGE_AS]).await;
    assert_eq!(c.metrics().guard_holds_total, 1);

    sites.set_unknown();
    let e = c
        .reconcile(HealthState::Down)
        .await
        .expect_err("count unknown");
    assert!(matches!(e, ControllerError::SiteCount(_)), "{e}");
    assert_eq!(
        edge.show_protocol(&ProtocolName::from_static("anycast4"))
            .await
            .expect("edge answers")
            .state,
        ProtocolState::Up,
        "frozen: still announcing"
    );

    sites.set(2);
    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Withdraw), "{r:?}");
    pair.wait_withdrawn().await;
    assert_host_table_untouched();
}

#[tokio::test]
async fn unknown_protocols_are_typed_errors() {
    let pair = Pair::start().await;
    let mut edge = pair.edge.client();
    let nosuch = ProtocolName::from_static("nosuch");
    for e in [
        edge.enable(&nosuch).await.expect_err("no such protocol"),
        edge.show_protocol(&nosuch)
            .await
            .expect_err("no such protocol"),
        edge.show_route_protocol(&nosuch)
            .await
            .expect_err("no such protocol"),
    ] {
        assert!(
            matches!(e, BirdError::NoSuchProtocol(ref n) if *n == nosuch),
            "{e}"
        );
    }
    let e = edge
        .command("show nonsense")
        .await
        .expect_err("syntax error");
    assert!(
        matches!(e, BirdError::Refused { code, .. } if code.value() == 9001),
        "{e}"
    );
    let rows = edge.show_protocols().await.expect("answers after errors");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["device1", "anycast4", "anycast4_prepend", "uplink"]);
}

/// A BIRD with static routes of every shape `show route` prints: gateways `onlink` on
/// `lo` (so neither a namespace nor an address is needed; no kernel protocol, so
/// nothing reaches the host's table), a multipath route, MPLS labels, a device route,
/// the three non-forwarding destinations, and a second table.
const ROUTES_CONFIG: &str = r#"router id 10.255.0.9;
log stderr all;
ipv4 table extra4;
protocol device { }
protocol static gateways {
  ipv4;
  route 198.51.100.0/24 via 192.0.2.1%lo onlink;
  route 198.51.101.0/24 via 192.0.2.1%lo onlink via 192.0.2.2%lo onlink weight 3;
  route 198.51.102.0/24 via "lo";
  route 198.51.103.0/24 via 192.0.2.1%lo mpls 100/200 onlink;
  route 198.51.104.0/24 unreachable;
  route 198.51.105.0/24 prohibit;
  route 198.51.106.0/24 blackhole;
}
protocol static extra { ipv4 { table extra4; }; route 203.0.113.128/25 blackhole; }
"#;

#[tokio::test]
async fn next_hops_and_destinations_of_a_real_bird() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bird = Bird::start(dir.path(), "routes", ROUTES_CONFIG).await;
    let mut client = bird.client();
    let started = Instant::now();
    // The static routes wait for the device protocol to see `lo`.
    let routes = loop {
        let reply = client
            .command("show route table all all")
            .await
            .expect("BIRD answers");
        let routes = Route::from_reply(&reply).expect("parses");
        if routes.len() == 8 {
            break routes;
        }
        assert!(
            started.elapsed() < WAIT,
            "BIRD never had the 8 routes; it has {routes:?}\n{}",
            bird.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let find = |network: &str| {
        routes
            .iter()
            .find(|r| r.network == network)
            .unwrap_or_else(|| panic!("no route to {network} in {routes:?}"))
    };
    let via = |gateway: [u8; 4], weight, mpls: &[u32]| NextHop {
        gateway: Some(IpAddr::from(gateway)),
        interface: "lo".to_owned(),
        weight,
        onlink: true,
        mpls: mpls.to_vec(),
    };
    assert_eq!(
        find("198.51.100.0/24").next_hops,
        [via([192, 0, 2, 1], None, &[])]
    );
    let multipath = &find("198.51.101.0/24").next_hops;
    assert_eq!(multipath.len(), 2, "{multipath:?}");
    for hop in [
        via([192, 0, 2, 1], Some(1), &[]),
        via([192, 0, 2, 2], Some(3), &[]),
    ] {
        assert!(multipath.contains(&hop), "{hop:?} in {multipath:?}");
    }
    let device = &find("198.51.102.0/24").next_hops;
    assert_eq!(
        (
            device.len(),
            device[0].gateway,
            device[0].interface.as_str()
        ),
        (1, None, "lo")
    );
    assert_eq!(
        find("198.51.103.0/24").next_hops,
        [via([192, 0, 2, 1], None, &[100, 200])]
    );
    for (network, destination) in [
        ("198.51.104.0/24", Destination::Unreachable),
        ("198.51.105.0/24", Destination::Prohibited),
        ("198.51.106.0/24", Destination::Blackhole),
    ] {
        let route = find(network);
        assert_eq!(route.destination, destination, "{network}");
        assert!(route.next_hops.is_empty(), "{network}");
    }
    for route in &routes {
        assert!(route.primary, "{route:?}");
        assert_eq!(route.attribute("Type"), Some("static univ"), "{route:?}");
        let (table, protocol) = if route.network == "203.0.113.128/25" {
            ("extra4", "extra")
        } else {
            ("master4", "gateways")
        };
        assert_eq!(
            (route.table.as_str(), route.protocol.as_str()),
            (table, protocol)
        );
        assert_eq!(
            route.destination == Destination::Unicast,
            !route.next_hops.is_empty(),
            "{route:?}"
        );
    }

    // The client's own calls read the same.
    let prefix: Prefix = "198.51.101.7/32".parse().expect("prefix");
    let longest = client.show_route_for(&prefix).await.expect("answers");
    assert_eq!(longest.len(), 1, "{longest:?}");
    assert_eq!(
        (longest[0].network.as_str(), longest[0].next_hops.len()),
        ("198.51.101.0/24", 2)
    );
    let own = client
        .show_route_protocol(&ProtocolName::from_static("gateways"))
        .await
        .expect("answers");
    assert_eq!(own.len(), 7, "{own:?}");
}
