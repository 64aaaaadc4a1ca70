//! `quota_change` (T1578, T1578.005): quota-increase bursts, per scope.
//!
//! Three triggers per scope (account / project / subscription): many quota-increase requests in
//! a window (`count_threshold`), requests spread over many regions (`region_threshold`: raising
//! GPU quotas everywhere at once is how cryptominers prepare), and an increase in a region the
//! scope has never used (`novel_region`). The last needs to know which regions a scope uses, so
//! this detector learns the regions of *every* event of the scope (a first-seen set), and only
//! reports novelty once the scope has been watched for `region_warmup`.

use super::{tables, Detector, EventCtx, RegionSeen, Route, Shared, Summarize, Summary};
use crate::alert::evidence::EvidenceRing;
use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence, Severity};
use crate::catalog::{Behaviour, Matches};
use crate::config::common::{at_least_one, window_and_pane};
use crate::config::{detector_config, ms, CommonSettings, ConfigError, Mode, Section};
use crate::event::CloudEvent;
use crate::window::{stable_hash, BoundedMap, FirstSeen, PaneSpec, SlidingCount, SlidingDistinct};
use std::borrow::Cow;
use std::time::Duration;

detector_config! {
    /// `[detectors.quota_change]`: quota-increase bursts and increases in unused regions
    /// (T1578, T1578.005), per scope.
    pub struct QuotaChangeConfig {
        severity = Severity::Medium;
        #[serde(with = "humantime_serde")]
        pub window: Duration = Duration::from_secs(3600),
        #[serde(with = "humantime_serde")]
        pub pane: Duration = Duration::from_secs(5 * 60),
        /// Alert at this many quota-increase requests in the window (0 disables).
        pub count_threshold: u32 = 5,
        /// Alert at this many distinct regions with quota requests in the window (0 disables).
        pub region_threshold: u32 = 3,
        /// Alert on a quota increase in a region the scope never used, once the scope has been
        /// watched this long.
        #[serde(with = "humantime_serde")]
        pub region_warmup: Duration = Duration::from_secs(7 * 24 * 3600),
        /// Regions remembered per scope.
        pub max_regions: usize = 64,
        /// Scopes tracked.
        pub max_keys: usize = 100_000,
    }
}

impl Section for QuotaChangeConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        window_and_pane(p, self.window, self.pane)?;
        at_least_one(&format!("{p}.max_keys"), self.max_keys)?;
        at_least_one(&format!("{p}.max_regions"), self.max_regions)?;
        Ok(())
    }
}

/// Stage 1 for this detector: the regions each scope is active in, from the events that are not
/// quota requests: one [`RegionSeen`] per (scope, region) the first time it is seen, or again
/// when seen earlier than last said.
struct Regions {
    /// (scope, region) → the earliest time already sent.
    sent: BoundedMap<u64, i64>,
}

impl Summarize for Regions {
    fn summarize<'a>(&mut self, ev: &'a CloudEvent<'_>, matches: &Matches) -> Option<Summary<'a>> {
        if matches.has(Behaviour::QuotaChange) {
            return None;
        }
        let key = stable_hash(&[
            ev.cloud_provider.as_str(),
            &ev.cloud_account_uid,
            &ev.cloud_region,
        ]);
        let t = ev.time;
        let mut send = false;
        let earliest = self.sent.get_or_insert_with(key, t, || {
            send = true;
            t
        });
        if t < *earliest {
            *earliest = t;
            send = true;
        }
        send.then(|| {
            Summary::Region(RegionSeen {
                provider: ev.cloud_provider,
                scope: Cow::Borrowed(&ev.cloud_account_uid),
                region: Cow::Borrowed(&ev.cloud_region),
                time: t,
            })
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ScopeState {
    regions: FirstSeen,
    requests: SlidingCount,
    request_regions: SlidingDistinct,
    count_armed: bool,
    regions_armed: bool,
    /// Newest quota-request time: windows are read as of it (see `burst::BurstKey::newest`).
    newest: i64,
}

impl ScopeState {
    fn new(t: i64) -> Self {
        ScopeState {
            regions: FirstSeen::new(t),
            requests: SlidingCount::new(),
            request_regions: SlidingDistinct::new(),
            count_armed: true,
            regions_armed: true,
            newest: i64::MIN,
        }
    }
}

pub struct QuotaChange {
    config: QuotaChangeConfig,
    pane: PaneSpec,
    scopes: BoundedMap<u64, ScopeState>,
    ring: EvidenceRing,
}

impl Detector for QuotaChange {
    type Config = QuotaChangeConfig;
    const ROUTE: Route = Route::Scope;

    fn new(config: QuotaChangeConfig, shared: &Shared) -> Self {
        QuotaChange {
            pane: PaneSpec::new(ms(config.window), ms(config.pane)),
            scopes: BoundedMap::new(config.max_keys),
            ring: EvidenceRing::new(shared.evidence_ring),
            config,
        }
    }

    fn name(&self) -> &'static str {
        "quota_change"
    }

    fn behaviour(&self) -> Behaviour {
        Behaviour::QuotaChange
    }

    fn summarizer(&self) -> Option<Box<dyn Summarize>> {
        Some(Box::new(Regions {
            sent: BoundedMap::new(self.config.max_keys.max(1)),
        }))
    }

    tables! { 0 => scopes }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        if ctx.late || !ctx.matches.has(Behaviour::QuotaChange) {
            return;
        }
        let ev = ctx.ev;
        let t = ev.time;
        let c = &self.config;
        let scope_hash = stable_hash(&[ev.cloud_provider.as_str(), &ev.cloud_account_uid]);
        let state = self
            .scopes
            .get_or_insert_with(scope_hash, t, || ScopeState::new(t));
        let region: &str = ev
            .api_request
            .requested_region
            .as_deref()
            .unwrap_or(&ev.cloud_region);
        let region_hash = stable_hash(&[region]);
        let known = state.regions.contains(region_hash);
        let watched_long_enough = t
            >= state
                .regions
                .first_activity()
                .saturating_add(ms(c.region_warmup));
        state.regions.observe(t, region_hash, 0, c.max_regions);
        let novel = !known && watched_long_enough && state.regions.contains(region_hash);

        let dry_run = match c.mode(&ev.cloud_account_uid, &ev.actor_user_uid) {
            Mode::Off => return,
            Mode::Live => false,
            Mode::DryRun => true,
        };
        if !state.requests.add(&self.pane, t, 1) {
            return;
        }
        state
            .request_regions
            .add(&self.pane, t, region_hash, c.max_regions);
        self.ring
            .push(scope_hash, t, region, ev.metadata_uid.as_deref());
        state.newest = state.newest.max(t);
        let now = state.newest;
        let count = state.requests.total(&self.pane, now);
        let regions = state.request_regions.distinct(&self.pane, now);

        let mut fired: Vec<(&'static str, f64)> = Vec::new();
        if novel {
            fired.push(("novel_region", 0.0));
        }
        if c.count_threshold > 0 && count >= u64::from(c.count_threshold) {
            if state.count_armed {
                fired.push(("count_threshold", f64::from(c.count_threshold)));
            }
            state.count_armed = false;
        } else {
            state.count_armed = true;
        }
        if c.region_threshold > 0 && regions >= c.region_threshold {
            if state.regions_armed {
                fired.push(("region_threshold", f64::from(c.region_threshold)));
            }
            state.regions_armed = false;
        } else {
            state.regions_armed = true;
        }
        if fired.is_empty() {
            return;
        }
        let window_start = state
            .requests
            .window_start()
            .unwrap_or(t)
            .max(self.pane.oldest_live_pane(now));
        let techniques = ctx.techniques(Behaviour::QuotaChange);
        for (trigger, threshold) in fired {
            let (title, samples_since, instance) = match trigger {
                "novel_region" => (
                    format!(
                        "Quota increase in a region {} {} has never used: {region} ({} by {})",
                        ev.cloud_provider, ev.cloud_account_uid, ev.api_operation, ev.actor_user_uid
                    ),
                    t,
                    format!("{trigger}|{region}"),
                ),
                _ => (
                    format!(
                        "Quota-increase burst in {} {}: {count} requests across {regions} regions within {}",
                        ev.cloud_provider,
                        ev.cloud_account_uid,
                        humantime::format_duration(c.window)
                    ),
                    window_start,
                    format!("{trigger}|{window_start}"),
                ),
            };
            let (samples, event_uids) =
                self.ring
                    .samples(scope_hash, samples_since, ctx.max_samples);
            let mut details = serde_json::Map::new();
            if let Some(q) = &ev.api_request.quota_code {
                details.insert("quota_code".into(), q.as_ref().into());
            }
            if let Some(s) = &ev.api_request.service_code {
                details.insert("service_code".into(), s.as_ref().into());
            }
            if let Some(v) = ev.api_request.quota_value {
                details.insert("quota_value".into(), v.into());
            }
            details.insert("regions_known".into(), (state.regions.len() as u64).into());
            let evidence = Evidence {
                count: Some(count),
                distinct_count: Some(u64::from(regions)),
                threshold: (threshold > 0.0).then_some(threshold),
                trigger: trigger.to_owned(),
                samples,
                event_uids,
                operations: vec![ev.api_operation.to_string()],
                details,
                ..Evidence::default()
            };
            out.push(Alert::new(AlertDraft {
                detector: "quota_change",
                title,
                severity: c.severity,
                dry_run,
                status: AlertStatus::New,
                techniques: &techniques,
                time: t,
                window_start: if trigger == "novel_region" {
                    t
                } else {
                    window_start
                },
                window_end: t,
                provider: ev.cloud_provider.as_str(),
                scope: &ev.cloud_account_uid,
                region,
                principal: Some(&ev.actor_user_uid),
                log_source: None,
                evidence,
                dedup_key: match trigger {
                    "novel_region" => format!(
                        "{}|{}|{trigger}|{region}",
                        ev.cloud_provider, ev.cloud_account_uid
                    ),
                    _ => format!("{}|{}|{trigger}", ev.cloud_provider, ev.cloud_account_uid),
                },
                instance,
            }));
        }
    }

    /// Every other event of a scope teaches it a region it uses (the repartition step sends one
    /// [`RegionSeen`] per scope, region and earliest time, not one per event).
    fn on_region(&mut self, r: &RegionSeen<'_>) {
        let scope_hash = stable_hash(&[r.provider.as_str(), &r.scope]);
        let state = self
            .scopes
            .get_or_insert_with(scope_hash, r.time, || ScopeState::new(r.time));
        state.regions.observe(
            r.time,
            stable_hash(&[&r.region]),
            0,
            self.config.max_regions,
        );
    }
}
