//! The per-event detectors driven by the catalog: `tenant_settings` (T1578.005), `event_trigger`
//! (T1546), `impair_defenses` (T1562), `conditional_access` (T1556.009) and `serverless` (T1648).
//!
//! They differ only in the behaviour they listen to and their config section, so they share this
//! one implementation (five registry entries, one file) rather than five copies. With `novelty`,
//! a detector alerts only the first time a principal performs an operation (a first-seen set per
//! principal, after an optional warm-up), which cuts the repeats of routine automation.

use super::{single_event_alert, Detector, DetectorStats, EventCtx};
use crate::alert::Alert;
use crate::catalog::{canonical_operation, Behaviour};
use crate::config::{ms, CommonSettings, Mode, PerEventConfig};
use crate::event::Outcome;
use crate::window::{stable_hash, BoundedMap, FirstSeen, Novelty};

/// Operations remembered per principal for novelty.
const NOVELTY_ITEMS: usize = 256;

pub struct PerEvent {
    behaviour: Behaviour,
    config: PerEventConfig,
    seen: BoundedMap<u64, FirstSeen>,
}

impl PerEvent {
    pub fn new(behaviour: Behaviour, config: PerEventConfig) -> Self {
        let keys = if config.novelty { config.max_keys } else { 1 };
        PerEvent {
            behaviour,
            seen: BoundedMap::new(keys),
            config,
        }
    }

    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    fn describe(&self) -> &'static str {
        match self.behaviour {
            Behaviour::TenantSettings => "Tenant-level setting changed",
            Behaviour::EventTrigger => "Event-triggered execution wired",
            Behaviour::ImpairDefenses => "Security defences impaired",
            Behaviour::ConditionalAccess => "Conditional access / authentication policy changed",
            Behaviour::Serverless => "Serverless function created or modified",
            Behaviour::LogDisable => "Cloud logging disabled or modified",
            Behaviour::SecretFetch => "Secret fetched",
            Behaviour::Discovery => "Discovery call",
            Behaviour::QuotaChange => "Quota change",
        }
    }
}

impl Detector for PerEvent {
    fn name(&self) -> &'static str {
        self.behaviour.as_str()
    }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        if !ctx.matches.has(self.behaviour) {
            return;
        }
        let ev = ctx.ev;
        if ev.status == Outcome::Failure && !self.config.include_failed {
            return;
        }
        let dry_run = match self.config.mode(&ev.cloud_account_uid, &ev.actor_user_uid) {
            Mode::Off => return,
            Mode::Live => false,
            Mode::DryRun => true,
        };
        let mut trigger = "match";
        if self.config.novelty {
            let principal = stable_hash(&[
                ev.cloud_provider.as_str(),
                &ev.cloud_account_uid,
                &ev.actor_user_uid,
            ]);
            let op = canonical_operation(ev.cloud_provider, &ev.api_operation);
            let item = stable_hash(&[&op]);
            let seen = self
                .seen
                .get_or_insert_with(principal, ev.time, || FirstSeen::new(ev.time));
            match seen.observe(ev.time, item, ms(self.config.novelty_warmup), NOVELTY_ITEMS) {
                Novelty::Known | Novelty::WarmingUp => return,
                Novelty::New | Novelty::Full => trigger = "novelty",
            }
        }
        let mut title = format!(
            "{}: {} by {} in {} {}",
            self.describe(),
            ev.api_operation,
            ev.actor_user_uid,
            ev.cloud_provider,
            ev.cloud_account_uid
        );
        if let (Some(old), Some(new)) = (
            ev.api_request.policy_old_state.as_deref(),
            ev.api_request.policy_new_state.as_deref(),
        ) {
            title.push_str(&format!(" ({old} → {new})"));
        }
        out.push(single_event_alert(
            ctx,
            self.name(),
            self.behaviour,
            title,
            self.config.severity,
            dry_run,
            trigger,
        ));
    }

    fn track_changes(&mut self) {
        self.seen.track_changes();
    }

    fn checkpoint(&mut self, out: &mut Vec<crate::state::Entry>) {
        crate::state::checkpoint_map(&mut self.seen, 0, out);
    }

    fn restore(
        &mut self,
        table: u8,
        key: u64,
        bytes: &[u8],
    ) -> Result<(), crate::state::StateError> {
        match table {
            0 => crate::state::restore_map(&mut self.seen, key, bytes),
            _ => Err(crate::state::StateError::UnknownTable),
        }
    }

    fn stats(&self) -> DetectorStats {
        DetectorStats {
            keys: self.seen.len(),
            evicted: self.seen.evicted(),
        }
    }
}
