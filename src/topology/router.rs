//! Stage 1 of the topology: from a classified event to what the stateful stage needs, keyed by
//! the state owner's routing key.
//!
//! Per event, each detector that reads one of the event's behaviours gets the event, routed by
//! the detector's [`Route`] (principal or scope): one [`Sink::event`] per routing key, naming the
//! detectors it is for, so an event both a principal detector and a scope detector need is sent
//! once to each owner and counted once by each detector. What a detector needs of the other
//! events it gets as a summary, made by the summariser it provides
//! ([`crate::detect::Detector::summarizer`]), sent to its routing key:
//!
//! - log-source activity, for `log_source_silence`: a one-event [`Beat`] per event (the live
//!   service merges them per pane and input partition before sending them on);
//! - the regions a scope is active in, for `quota_change`: one [`RegionSeen`] per (scope,
//!   region) the first time it is seen, or again when seen earlier than last said.
//!
//! The router names no detector: each one says what it reads and how it is keyed.
//!
//! The router is pure: the in-process engine's sink is the stateful stage itself; the live
//! service's sink writes the repartition topic.

use crate::catalog::{Behaviour, Matches};
use crate::config::Config;
use crate::detect::{self, Beat, DetectorSet, RegionSeen, Route, Shared, Summarize, Summary};
use crate::event::CloudEvent;
use crate::window::stable_hash;

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
    /// The summarisers of the enabled detectors that have one, with the detector's route.
    summaries: Vec<(Route, Box<dyn Summarize>)>,
}

impl Router {
    /// Takes a [`Config`] (or a `config::Valid`, by deref): the router needs only the detector
    /// sections, no catalog.
    pub fn new(config: &Config) -> Router {
        let shared = Shared {
            evidence_ring: config.alerts.evidence_ring,
        };
        let mut wants = Vec::new();
        let mut summaries = Vec::new();
        for d in detect::build(&config.detectors, &shared) {
            wants.push(Want {
                index: d.index(),
                behaviour: d.behaviour(),
                route: d.route(),
                late_ok: d.late_events(),
            });
            if let Some(s) = d.summarizer() {
                summaries.push((d.route(), s));
            }
        }
        Router { wants, summaries }
    }

    /// Whether any enabled detector keys its state by `route`.
    pub fn uses(&self, route: Route) -> bool {
        self.wants.iter().any(|w| w.route == route)
            || self.summaries.iter().any(|(r, _)| *r == route)
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
        let principal_key = || {
            stable_hash(&[
                ev.cloud_provider.as_str(),
                &ev.cloud_account_uid,
                &ev.actor_user_uid,
            ])
        };
        if !principal.is_empty() {
            sink.event(principal_key(), principal, ev, matches, late);
        }
        if !scope.is_empty() {
            sink.event(scope_key, scope, ev, matches, late);
        }
        if late {
            return;
        }
        for (route, summarizer) in &mut self.summaries {
            let Some(summary) = summarizer.summarize(ev, matches) else {
                continue;
            };
            let key = match route {
                Route::Scope => scope_key,
                Route::Principal => principal_key(),
            };
            match summary {
                Summary::Beat(beat) => sink.beat(key, beat),
                Summary::Region(region) => sink.region(key, region),
            }
        }
    }
}
