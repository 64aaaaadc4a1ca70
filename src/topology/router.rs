//! Stage 1 of the topology: from a classified event to what the stateful stage needs, keyed by
//! the state owner's routing key.
//!
//! Per event, each detector that reads one of the event's behaviours gets the event, routed by
//! the detector's [`Route`] (principal or scope): one [`Sink::event`] per routing key, naming the
//! detectors it is for, so an event both a principal detector and a scope detector need is sent
//! once to each owner and counted once by each detector. Two kinds of events are not forwarded
//! one by one, because the stateful stage only needs a summary of them:
//!
//! - log-source activity, for `log_source_silence`: a one-event [`Beat`] per event (the live
//!   service merges them per pane and input partition before sending them on);
//! - the regions a scope is active in, for `quota_change`: one [`RegionSeen`] per (scope,
//!   region) the first time it is seen, or again when seen earlier than last said.
//!
//! The router is pure: the in-process engine's sink is the stateful stage itself; the live
//! service's sink writes the repartition topic.

use crate::catalog::{Behaviour, Matches};
use crate::config::{ms, Config};
use crate::detect::{self, Beat, DetectorSet, RegionSeen, Route};
use crate::event::CloudEvent;
use crate::window::{stable_hash, BoundedMap};
use std::borrow::Cow;

/// Where stage 1 sends what it routes. `route` is the stable hash of the routing key.
pub trait Sink {
    fn event(
        &mut self,
        route: u64,
        detectors: DetectorSet,
        ev: &CloudEvent<'_>,
        matches: &Matches,
        late: bool,
    );
    fn beat(&mut self, route: u64, beat: Beat<'_>);
    fn region(&mut self, route: u64, region: RegionSeen<'_>);
}

/// One enabled detector's input.
#[derive(Debug, Clone, Copy)]
struct Want {
    index: usize,
    behaviour: Behaviour,
    route: Route,
    late_ok: bool,
}

pub struct Router {
    wants: Vec<Want>,
    /// `Some((per_service, resolution_ms))` when `log_source_silence` is enabled.
    silence: Option<(bool, i64)>,
    quota: bool,
    /// (scope, region) → the earliest time already sent.
    regions: BoundedMap<u64, i64>,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        let detectors = detect::build(config);
        let mut wants = Vec::new();
        let mut silence = None;
        let mut quota = false;
        for d in &detectors {
            let (behaviour, route, late_ok) = d.consumes();
            let index = detect::detector_index(crate::detect::Detector::name(d));
            wants.push(Want {
                index,
                behaviour,
                route,
                late_ok,
            });
            match d {
                detect::AnyDetector::LogSourceSilence(_) => {
                    let c = &config.detectors.log_source_silence;
                    silence = Some((c.per_service, ms(c.resolution).max(1)));
                }
                detect::AnyDetector::QuotaChange(_) => quota = true,
                _ => {}
            }
        }
        Router {
            wants,
            silence,
            quota,
            regions: BoundedMap::new(config.detectors.quota_change.max_keys.max(1)),
        }
    }

    /// Whether any enabled detector keys its state by `route`.
    pub fn uses(&self, route: Route) -> bool {
        self.wants.iter().any(|w| w.route == route)
            || (route == Route::Scope && (self.silence.is_some() || self.quota))
    }

    /// Routes one classified event. `late`: older than the watermark of its input.
    pub fn route(
        &mut self,
        ev: &CloudEvent<'_>,
        matches: &Matches,
        late: bool,
        sink: &mut impl Sink,
    ) {
        let mut principal = DetectorSet::default();
        let mut scope = DetectorSet::default();
        if !matches.is_empty() {
            for w in &self.wants {
                if matches.has(w.behaviour) && (w.late_ok || !late) {
                    match w.route {
                        Route::Principal => principal = principal.with(w.index),
                        Route::Scope => scope = scope.with(w.index),
                    }
                }
            }
        }
        let scope_key = stable_hash(&[ev.cloud_provider.as_str(), &ev.cloud_account_uid]);
        if !principal.is_empty() {
            let key = stable_hash(&[
                ev.cloud_provider.as_str(),
                &ev.cloud_account_uid,
                &ev.actor_user_uid,
            ]);
            sink.event(key, principal, ev, matches, late);
        }
        if !scope.is_empty() {
            sink.event(scope_key, scope, ev, matches, late);
        }
        if late {
            return;
        }
        if let Some((per_service, resolution)) = self.silence {
            sink.beat(
                scope_key,
                detect::log_source_silence::beat_of(ev, per_service, resolution),
            );
        }
        if self.quota && !matches.has(Behaviour::QuotaChange) {
            let key = stable_hash(&[
                ev.cloud_provider.as_str(),
                &ev.cloud_account_uid,
                &ev.cloud_region,
            ]);
            let t = ev.time;
            let mut send = false;
            let earliest = self.regions.get_or_insert_with(key, t, || {
                send = true;
                t
            });
            if t < *earliest {
                *earliest = t;
                send = true;
            }
            if send {
                sink.region(
                    scope_key,
                    RegionSeen {
                        provider: ev.cloud_provider,
                        scope: Cow::Borrowed(&ev.cloud_account_uid),
                        region: Cow::Borrowed(&ev.cloud_region),
                        time: t,
                    },
                );
            }
        }
    }

    /// (scope, region) pairs remembered.
    pub fn regions_len(&self) -> usize {
        self.regions.len()
    }
}
