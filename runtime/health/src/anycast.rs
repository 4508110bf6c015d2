//! The anycast controller: makes BIRD announce what the health state asks for.
//!
//! The anycast prefix lives in its own static protocol (`anycast4`); with
//! [`AnycastAction::Deprefer`] a second static protocol (`anycast4_prepend`) holds the
//! same prefix behind an export filter that prepends the AS path.
//!
//! | health state | action   | wanted         | primary  | prepend  |
//! |--------------|----------|----------------|----------|----------|
//! | up           | any      | `Announce`     | enabled  | disabled |
//! | down         | withdraw | `Withdraw`     | disabled | disabled |
//! | down         | deprefer | `Deprefer`     | disabled | enabled  |
//! | disabled     | any      | `Withdraw`     | disabled | disabled |
//!
//! The BIRD side, as the tests run it (`tests/bird.rs`; both protocols start
//! `disabled`, so a BIRD that (re)starts announces nothing until the controller says):
//!
//! ```text
//! protocol static anycast4         { disabled; ipv4; route 203.0.113.10/32 blackhole; }
//! protocol static anycast4_prepend { disabled; ipv4; route 203.0.113.10/32 blackhole; }
//! filter anycast_export {
//!   if proto = "anycast4_prepend" then { bgp_path.prepend(65001); bgp_path.prepend(65001); }
//!   if proto = "anycast4" || proto = "anycast4_prepend" then accept;
//!   reject;
//! }
//! protocol bgp uplink { … ipv4 { import none; export filter anycast_export; }; }
//! ```
//!
//! Each [`AnycastController::reconcile`] reads `show protocols` and sends `enable` and
//! `disable` only where BIRD differs from what is wanted, so a BIRD that restarted
//! with its config's defaults is put back on the next cycle. Protocols are enabled
//! before others are disabled (make before break), so going between `Announce` and
//! `Deprefer` never leaves a gap.
//!
//! Two safety rules:
//! - **The guard.** Before a withdrawal takes this site's announcement away, the
//!   controller asks a [`SiteCount`] how many sites announce now; when fewer than
//!   `min_announcing` would remain, it keeps announcing and says so
//!   ([`Reconciled::GuardHeld`]). This keeps a fault that fails every site's probes at
//!   once (the log region down, say) from withdrawing the service everywhere. A drain
//!   is a withdrawal too and is held the same way. A floor of 0 turns the guard off
//!   (the count is never asked for).
//! - **Freeze on its own errors.** When BIRD cannot be read or the site count is
//!   unknown, the controller changes nothing and returns the error; BIRD keeps
//!   announcing whatever it announced.
//!
//! ```text
//!  HealthState ─▶ wanted Announcement ─▶ show protocols ─▶ differs? ─no──▶ InSync
//!                                                            │yes
//!                                  withdrawal while announcing? ─yes─▶ SiteCount ─▶ too few left ─▶ GuardHeld
//!                                                            │no                      │enough
//!                                                            ▼                        ▼
//!                                           enable wanted ones, then disable the others ─▶ Applied
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::bird::{BirdClient, BirdError, ProtocolName, ProtocolStatus, Toggled};
use crate::hysteresis::HealthState;
use crate::settings::{AnycastAction, AnycastProtocols, HealthSettings};

/// What the anycast prefix should look like from this site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Announcement {
    /// Announced plainly (primary protocols enabled).
    Announce,
    /// Announced with a prepended AS path (prepend protocols enabled).
    Deprefer,
    /// Not announced.
    Withdraw,
}

impl Announcement {
    /// What `state` asks for under `action`.
    pub fn wanted(state: HealthState, action: AnycastAction) -> Announcement {
        match (state, action) {
            (HealthState::Up, _) => Announcement::Announce,
            (HealthState::Down, AnycastAction::Deprefer) => Announcement::Deprefer,
            (HealthState::Down, AnycastAction::Withdraw) | (HealthState::Disabled, _) => {
                Announcement::Withdraw
            }
        }
    }

    /// Lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Announcement::Announce => "announce",
            Announcement::Deprefer => "deprefer",
            Announcement::Withdraw => "withdraw",
        }
    }
}

impl fmt::Display for Announcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The site count could not be learnt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("announcing site count unknown: {0}")]
pub struct SiteCountError(pub String);

/// "How many sites announce the anycast prefix now?", this one included when it
/// announces. Implementations (the DNS service's view of edge reports, a router's
/// table) come with the health loop; [`StaticSiteCount`] serves tests.
pub trait SiteCount {
    /// The number of announcing sites, or why it is unknown.
    fn announcing_sites(&self) -> impl Future<Output = Result<u32, SiteCountError>> + Send;
}

impl<T: SiteCount + Sync + ?Sized> SiteCount for Arc<T> {
    fn announcing_sites(&self) -> impl Future<Output = Result<u32, SiteCountError>> + Send {
        (**self).announcing_sites()
    }
}

/// A site count set by hand: a number, or unknown.
#[derive(Debug)]
pub struct StaticSiteCount {
    /// The count, or -1 for unknown.
    sites: AtomicI64,
}

impl StaticSiteCount {
    /// A count of `sites`.
    pub fn new(sites: u32) -> StaticSiteCount {
        StaticSiteCount {
            sites: AtomicI64::new(i64::from(sites)),
        }
    }

    /// Sets the count.
    pub fn set(&self, sites: u32) {
        self.sites.store(i64::from(sites), Ordering::Relaxed);
    }

    /// Makes the count unknown: every question fails.
    pub fn set_unknown(&self) {
        self.sites.store(-1, Ordering::Relaxed);
    }
}

impl SiteCount for StaticSiteCount {
    async fn announcing_sites(&self) -> Result<u32, SiteCountError> {
        u32::try_from(self.sites.load(Ordering::Relaxed))
            .map_err(|_| SiteCountError("the static count is set to unknown".to_owned()))
    }
}

/// One `enable` or `disable` the controller sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The protocol.
    pub protocol: ProtocolName,
    /// `true` for `enable`, `false` for `disable`.
    pub enable: bool,
    /// What BIRD said it did.
    pub toggled: Toggled,
}

/// What one reconcile cycle did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// BIRD already announced what is wanted; nothing sent.
    InSync(Announcement),
    /// Commands were sent to make BIRD announce `to`.
    Applied {
        /// What is now announced.
        to: Announcement,
        /// The commands, in the order sent.
        changes: Vec<Change>,
    },
    /// A withdrawal was wanted, but the guard kept the announcement.
    GuardHeld {
        /// Sites announcing, this one included.
        announcing_sites: u32,
        /// The guard's floor.
        min_announcing: u32,
    },
}

/// Why a cycle changed nothing (the controller froze).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// BIRD could not be read or commanded.
    #[error(transparent)]
    Bird(#[from] BirdError),
    /// The guard could not learn the site count, so no withdrawal is made.
    #[error(transparent)]
    SiteCount(#[from] SiteCountError),
    /// A configured protocol is missing from BIRD's `show protocols` (BIRD's config
    /// and ours disagree).
    #[error("BIRD has no protocol named {0}")]
    MissingProtocol(ProtocolName),
}

/// Settings the controller cannot work with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid health settings: {}", problems.join("; "))]
pub struct InvalidSettings {
    /// Every problem found ([`HealthSettings::problems`]).
    pub problems: Vec<String>,
}

/// Counters and gauges of the controller, plain data for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnycastMetrics {
    /// The health state of the last cycle.
    pub state: Option<HealthState>,
    /// What the last cycle wanted.
    pub wanted: Option<Announcement>,
    /// What BIRD announces, as of the last cycle that read it and did not fail.
    pub announcing: Option<Announcement>,
    /// Whether the last cycle failed (nothing was changed).
    pub frozen: bool,
    /// Cycles run.
    pub reconciles_total: u64,
    /// `enable`/`disable` commands that changed a protocol.
    pub changes_total: u64,
    /// Cycles in which the guard kept the announcement.
    pub guard_holds_total: u64,
    /// Cycles that failed on BIRD (unreachable, refused, unreadable, missing protocol).
    pub bird_errors_total: u64,
    /// Cycles that failed because the site count was unknown.
    pub site_count_errors_total: u64,
}

/// Keeps BIRD's announcement in line with the health state.
#[derive(Debug)]
pub struct AnycastController<S> {
    bird: BirdClient,
    protocols: AnycastProtocols,
    action: AnycastAction,
    min_announcing: u32,
    sites: S,
    metrics: AnycastMetrics,
}

impl<S: SiteCount> AnycastController<S> {
    /// A controller of the BIRD at `settings.bird_socket`, guarded by `sites`.
    pub fn new(settings: &HealthSettings, sites: S) -> Result<Self, InvalidSettings> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(InvalidSettings { problems });
        }
        Ok(AnycastController {
            bird: BirdClient::new(settings.bird_socket.clone(), settings.bird_timeout),
            protocols: settings.protocols.clone(),
            action: settings.action,
            min_announcing: settings.min_announcing,
            sites,
            metrics: AnycastMetrics::default(),
        })
    }

    /// The counters and gauges.
    pub fn metrics(&self) -> &AnycastMetrics {
        &self.metrics
    }

    /// One cycle: reads BIRD and makes it announce what `state` asks for, unless the
    /// guard holds. On error nothing more is changed and the error is returned.
    pub async fn reconcile(&mut self, state: HealthState) -> Result<Reconciled, ControllerError> {
        let wanted = Announcement::wanted(state, self.action);
        self.metrics.reconciles_total += 1;
        self.metrics.state = Some(state);
        self.metrics.wanted = Some(wanted);
        let result = self.cycle(wanted).await;
        self.metrics.frozen = result.is_err();
        match &result {
            Ok(Reconciled::InSync(_)) => {}
            Ok(Reconciled::Applied { to, changes }) => {
                let changed = changes
                    .iter()
                    .filter(|c| c.toggled == Toggled::Changed)
                    .count();
                self.metrics.changes_total += changed as u64;
                tracing::info!(%state, announcement = %to, changed, "anycast announcement applied to BIRD");
            }
            Ok(Reconciled::GuardHeld {
                announcing_sites,
                min_announcing,
            }) => {
                self.metrics.guard_holds_total += 1;
                tracing::warn!(
                    %state,
                    announcing_sites,
                    min_announcing,
                    "anycast guard held: withdrawing would leave fewer sites than min_announcing; still announcing"
                );
            }
            Err(ControllerError::SiteCount(error)) => {
                self.metrics.site_count_errors_total += 1;
                tracing::warn!(%state, %error, "anycast controller frozen: site count unknown, nothing changed");
            }
            Err(error) => {
                self.metrics.bird_errors_total += 1;
                tracing::warn!(%state, %error, "anycast controller frozen: BIRD failed, nothing more changed");
            }
        }
        result
    }

    async fn cycle(&mut self, wanted: Announcement) -> Result<Reconciled, ControllerError> {
        let rows = self.bird.show_protocols().await?;
        let plan = self.plan(&rows, wanted)?;
        self.metrics.announcing = Some(plan.announcing);
        if plan.enable.is_empty() && plan.disable.is_empty() {
            return Ok(Reconciled::InSync(wanted));
        }
        // With a floor of 0 the guard is off: the count is not even asked for.
        if wanted == Announcement::Withdraw && plan.announces_now && self.min_announcing > 0 {
            let announcing_sites = self.sites.announcing_sites().await?;
            if announcing_sites.saturating_sub(1) < self.min_announcing {
                return Ok(Reconciled::GuardHeld {
                    announcing_sites,
                    min_announcing: self.min_announcing,
                });
            }
        }
        let mut changes = Vec::with_capacity(plan.enable.len() + plan.disable.len());
        for (protocol, enable) in plan
            .enable
            .iter()
            .map(|p| (p, true))
            .chain(plan.disable.iter().map(|p| (p, false)))
        {
            let toggled = if enable {
                self.bird.enable(protocol).await?
            } else {
                self.bird.disable(protocol).await?
            };
            changes.push(Change {
                protocol: protocol.clone(),
                enable,
                toggled,
            });
        }
        self.metrics.announcing = Some(wanted);
        Ok(Reconciled::Applied {
            to: wanted,
            changes,
        })
    }

    /// Compares BIRD's rows with `wanted`.
    fn plan(&self, rows: &[ProtocolStatus], wanted: Announcement) -> Result<Plan, ControllerError> {
        let (primary_on, prepend_on) = match wanted {
            Announcement::Announce => (true, false),
            Announcement::Deprefer => (false, true),
            Announcement::Withdraw => (false, false),
        };
        let mut plan = Plan {
            enable: Vec::new(),
            disable: Vec::new(),
            announces_now: false,
            announcing: Announcement::Withdraw,
        };
        let mut primary_running = false;
        let mut prepend_running = false;
        let all = self
            .protocols
            .primary
            .iter()
            .map(|p| (p, primary_on, true))
            .chain(
                self.protocols
                    .prepend
                    .iter()
                    .map(|p| (p, prepend_on, false)),
            );
        for (name, on, primary) in all {
            let row = rows
                .iter()
                .find(|r| r.name == name.as_str())
                .ok_or_else(|| ControllerError::MissingProtocol(name.clone()))?;
            // A state that is neither running nor stopped counts as announcing and
            // as different from anything wanted, so it is set again.
            let stopped = row.state.is_stopped();
            plan.announces_now |= !stopped;
            if primary {
                primary_running |= row.state.is_running();
            } else {
                prepend_running |= row.state.is_running();
            }
            if on && !row.state.is_running() {
                plan.enable.push(name.clone());
            } else if !on && !stopped {
                plan.disable.push(name.clone());
            }
        }
        plan.announcing = if primary_running {
            Announcement::Announce
        } else if prepend_running {
            Announcement::Deprefer
        } else {
            Announcement::Withdraw
        };
        Ok(plan)
    }
}

/// What a cycle has to send.
struct Plan {
    enable: Vec<ProtocolName>,
    disable: Vec<ProtocolName>,
    /// Whether any of our protocols is not stopped.
    announces_now: bool,
    /// What BIRD announces, as read.
    announcing: Announcement,
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// A stand-in for BIRD's control socket that knows `show protocols`, `enable` and
    /// `disable` of static protocols, and records every command.
    struct FakeBird {
        states: Mutex<BTreeMap<String, bool>>,
        log: Mutex<Vec<String>>,
    }

    impl FakeBird {
        fn start(dir: &std::path::Path, protocols: &[(&str, bool)]) -> Arc<FakeBird> {
            let bird = Arc::new(FakeBird {
                states: Mutex::new(
                    protocols
                        .iter()
                        .map(|(n, up)| (n.to_string(), *up))
                        .collect(),
                ),
                log: Mutex::new(Vec::new()),
            });
            let listener = UnixListener::bind(dir.join("bird.ctl")).expect("bind fake socket");
            let served = Arc::clone(&bird);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let bird = Arc::clone(&served);
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut lines = BufReader::new(read).lines();
                        write.write_all(b"0001 BIRD fake ready.\n").await.ok();
                        while let Ok(Some(line)) = lines.next_line().await {
                            let reply = bird.answer(&line);
                            if write.write_all(reply.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            bird
        }

        fn answer(&self, command: &str) -> String {
            self.log.lock().expect("log lock").push(command.to_owned());
            let mut states = self.states.lock().expect("states lock");
            if command == "show protocols" {
                let mut out = String::from(
                    "2002-Name       Proto      Table      State  Since         Info\n",
                );
                for (name, up) in states.iter() {
                    let state = if *up { "up" } else { "down" };
                    out.push_str(&format!(
                        "1002-{name:<10} Static     master4    {state:<6} 16:52:05.778  \n"
                    ));
                }
                return out + "0000 \n";
            }
            let Some((verb, name)) = command.split_once(' ') else {
                return "9001 syntax error\n".to_owned();
            };
            let name = name.trim_matches('"');
            let Some(up) = states.get_mut(name) else {
                return "8003 No protocols match\n".to_owned();
            };
            let enable = verb == "enable";
            let code = match (enable, *up == enable) {
                (true, true) => "0010-%: already enabled",
                (true, false) => "0011-%: enabled",
                (false, true) => "0008-%: already disabled",
                (false, false) => "0009-%: disabled",
            };
            *up = enable;
            format!("{}\n0000 \n", code.replace('%', name))
        }

        fn up(&self, name: &str) -> bool {
            self.states.lock().expect("states lock")[name]
        }

        fn take_log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock().expect("log lock"))
        }
    }

    fn settings(dir: &std::path::Path, action: AnycastAction) -> HealthSettings {
        HealthSettings {
            bird_socket: dir.join("bird.ctl"),
            bird_timeout: Duration::from_secs(5),
            action,
            ..HealthSettings::default()
        }
    }

    #[test]
    fn wanted_announcements() {
        use AnycastAction::{Deprefer, Withdraw};
        assert_eq!(
            Announcement::wanted(HealthState::Up, Withdraw),
            Announcement::Announce
        );
        assert_eq!(
            Announcement::wanted(HealthState::Up, Deprefer),
            Announcement::Announce
        );
        assert_eq!(
            Announcement::wanted(HealthState::Down, Withdraw),
            Announcement::Withdraw
        );
        assert_eq!(
            Announcement::wanted(HealthState::Down, Deprefer),
            Announcement::Deprefer
        );
        assert_eq!(
            Announcement::wanted(HealthState::Disabled, Deprefer),
            Announcement::Withdraw
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        let s = HealthSettings {
            action: AnycastAction::Deprefer,
            protocols: AnycastProtocols {
                primary: vec![ProtocolName::from_static("anycast4")],
                prepend: Vec::new(),
            },
            ..HealthSettings::default()
        };
        let e =
            AnycastController::new(&s, StaticSiteCount::new(3)).expect_err("no prepend protocol");
        assert_eq!(e.problems.len(), 1);
    }

    #[tokio::test]
    async fn up_down_deprefer_and_in_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bird = FakeBird::start(
            dir.path(),
            &[("anycast4", false), ("anycast4_prepend", false)],
        );
        let sites = Arc::new(StaticSiteCount::new(3));
        let mut c = AnycastController::new(
            &settings(dir.path(), AnycastAction::Deprefer),
            Arc::clone(&sites),
        )
        .expect("valid settings");

        let r = c.reconcile(HealthState::Up).await.expect("reconciles");
        assert!(
            matches!(
                r,
                Reconciled::Applied {
                    to: Announcement::Announce,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(bird.up("anycast4") && !bird.up("anycast4_prepend"));
        assert_eq!(bird.take_log(), ["show protocols", "enable \"anycast4\""]);

        assert_eq!(
            c.reconcile(HealthState::Up).await.expect("ok"),
            Reconciled::InSync(Announcement::Announce)
        );
        assert_eq!(bird.take_log(), ["show protocols"]);

        let r = c.reconcile(HealthState::Down).await.expect("reconciles");
        assert!(
            matches!(
                r,
                Reconciled::Applied {
                    to: Announcement::Deprefer,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(!bird.up("anycast4") && bird.up("anycast4_prepend"));
        assert_eq!(
            bird.take_log(),
            [
                "show protocols",
                "enable \"anycast4_prepend\"",
                "disable \"anycast4\""
            ],
            "make before break"
        );

        let r = c
            .reconcile(HealthState::Disabled)
            .await
            .expect("reconciles");
        assert!(
            matches!(
                r,
                Reconciled::Applied {
                    to: Announcement::Withdraw,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(!bird.up("anycast4") && !bird.up("anycast4_prepend"));

        let m = c.metrics();
        assert_eq!(
            (m.reconciles_total, m.changes_total, m.guard_holds_total),
            (4, 4, 0)
        );
        assert_eq!(m.announcing, Some(Announcement::Withdraw));
        assert!(!m.frozen);
    }

    #[tokio::test]
    async fn bird_changed_behind_our_back_is_put_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bird = FakeBird::start(
            dir.path(),
            &[("anycast4", false), ("anycast4_prepend", false)],
        );
        let mut c = AnycastController::new(
            &settings(dir.path(), AnycastAction::Withdraw),
            StaticSiteCount::new(3),
        )
        .expect("valid settings");
        c.reconcile(HealthState::Up).await.expect("reconciles");
        bird.states
            .lock()
            .expect("lock")
            .insert("anycast4".into(), false);
        let r = c.reconcile(HealthState::Up).await.expect("reconciles");
        assert!(
            matches!(
                r,
                Reconciled::Applied {
                    to: Announcement::Announce,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(bird.up("anycast4"));
    }

    #[tokio::test]
    async fn guard_holds_the_last_sites_and_releases_when_more_announce() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bird = FakeBird::start(
            dir.path(),
            &[("anycast4", true), ("anycast4_prepend", false)],
        );
        let sites = Arc::new(StaticSiteCount::new(2));
        let mut s = settings(dir.path(), AnycastAction::Withdraw);
        s.min_announcing = 2;
        let mut c = AnycastController::new(&s, Arc::clone(&sites)).expect("valid settings");

        let r = c.reconcile(HealthState::Down).await.expect("reconciles");
        assert_eq!(
            r,
            Reconciled::GuardHeld {
                announcing_sites: 2,
                min_announcing: 2
            }
        );
        assert!(bird.up("anycast4"), "still announcing");
        assert_eq!(bird.take_log(), ["show protocols"]);
        assert_eq!(c.metrics().guard_holds_total, 1);

        sites.set(3);
        let r = c.reconcile(HealthState::Down).await.expect("reconciles");
        assert!(
            matches!(
                r,
                Reconciled::Applied {
                    to: Announcement::Withdraw,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(!bird.up("anycast4"));

        sites.set(0);
        assert_eq!(
            c.reconcile(HealthState::Down).await.expect("ok"),
            Reconciled::InSync(Announcement::Withdraw),
            "nothing to take down: the guard is not asked"
        );
    }

    #[tokio::test]
    async fn unknown_site_count_freezes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bird = FakeBird::start(
            dir.path(),
            &[("anycast4", true), ("anycast4_prepend", false)],
        );
        let sites = Arc::new(StaticSiteCount::new(5));
        sites.set_unknown();
        let mut c = AnycastController::new(
            &settings(dir.path(), AnycastAction::Withdraw),
            Arc::clone(&sites),
        )
        .expect("valid settings");
        let e = c.reconcile(HealthState::Down).await.expect_err("frozen");
        assert!(matches!(e, ControllerError::SiteCount(_)), "{e}");
        assert!(bird.up("anycast4"));
        assert!(c.metrics().frozen);
        assert_eq!(c.metrics().site_count_errors_total, 1);
        // Coming up needs no site count.
        assert_eq!(
            c.reconcile(HealthState::Up).await.expect("ok"),
            Reconciled::InSync(Announcement::Announce)
        );
        assert!(!c.metrics().frozen);
    }

    #[tokio::test]
    async fn a_floor_of_zero_withdraws_without_asking_the_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bird = FakeBird::start(
            dir.path(),
            &[("anycast4", true), ("anycast4_prepend", false)],
        );
        let sites = Arc::new(StaticSiteCount::new(1));
        sites.set_unknown();
        let mut s = settings(dir.path(), AnycastAction::Withdraw);
        s.min_announcing = 0;
        let mut c = AnycastController::new(&s, Arc::clone(&sites)).expect("valid settings");
        let r = c
            .reconcile(HealthState::Disabled)
            .await
            .expect("reconciles");
        assert!(
            matches!(
                r,
                Reconciled::Applied {
                    to: Announcement::Withdraw,
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(!bird.up("anycast4"));
        assert_eq!(c.metrics().site_count_errors_total, 0);
    }

    #[tokio::test]
    async fn missing_protocol_and_missing_bird_freeze() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = AnycastController::new(
            &settings(dir.path(), AnycastAction::Withdraw),
            StaticSiteCount::new(3),
        )
        .expect("valid settings");
        let e = c.reconcile(HealthState::Up).await.expect_err("no BIRD");
        assert!(
            matches!(e, ControllerError::Bird(BirdError::Connect { .. })),
            "{e}"
        );

        let _bird = FakeBird::start(dir.path(), &[("anycast4", false)]);
        let e = c
            .reconcile(HealthState::Up)
            .await
            .expect_err("no prepend protocol");
        assert!(
            matches!(e, ControllerError::MissingProtocol(ref p) if p.as_str() == "anycast4_prepend"),
            "{e}"
        );
        assert_eq!(c.metrics().bird_errors_total, 2);
        assert!(c.metrics().frozen);
    }
}
