//! The per-event detectors driven by the catalog: `tenant_settings` (T1578.005), `event_trigger`
//! (T1546), `impair_defenses` (T1562), `conditional_access` (T1556.009) and `serverless` (T1648).
//!
//! They differ only in the behaviour they listen to, their title and their config section (whose
//! default severity differs), so they share this one implementation, generic over the section
//! ([`PerEventSection`], declared by `per_event_config!` with the behaviour and the title): five
//! registry entries, one file, rather than five copies. With `novelty`,
//! a detector alerts only the first time a principal performs an operation (a first-seen set per
//! principal, after an optional warm-up), which cuts the repeats of routine automation.

use super::{single_event_alert, tables, Detector, EventCtx, Route, Shared};
use crate::alert::{Alert, Severity};
use crate::catalog::{canonical_operation, Behaviour};
use crate::config::{at_least_one, detector_config, ms, ConfigError, Mode, Section};
use crate::event::Outcome;
use crate::window::{stable_hash, BoundedMap, FirstSeen, Novelty};
use std::time::Duration;

/// A per-event detector's section: the shared settings, the per-event ones, and what the detector
/// is about.
pub trait PerEventSection: Section {
    /// The catalog behaviour it alerts on (its name is the detector's name).
    const BEHAVIOUR: Behaviour;
    /// How its alert titles start.
    const TITLE: &'static str;
    /// Only alert the first time a (principal, operation) pair is seen.
    fn novelty(&self) -> bool;
    /// With `novelty`, learn silently for this long after a principal's first event.
    fn novelty_warmup(&self) -> Duration;
    /// Principals tracked for novelty.
    fn max_keys(&self) -> usize;
    /// Alert on failed calls too.
    fn include_failed(&self) -> bool;
}

/// Declares the config section of one per-event detector, `[detectors.<name>]`, with this
/// detector's own default severity (a section the user writes keeps the severity default of its
/// detector, which one shared struct could not do), and its [`PerEvent`] type.
macro_rules! per_event_config {
    (
        $(#[$meta:meta])*
        $detector:ident: $name:ident, $behaviour:expr, $severity:expr, $title:expr
    ) => {
        detector_config! {
            $(#[$meta])*
            pub struct $name {
                severity = $severity;
                /// Only alert the first time a (principal, operation) pair is seen.
                pub novelty: bool = false,
                /// With `novelty`, learn silently for this long after a principal's first event.
                #[serde(with = "humantime_serde")]
                pub novelty_warmup: Duration = Duration::ZERO,
                /// Principals tracked for novelty.
                pub max_keys: usize = 100_000,
                /// Alert on failed calls too.
                pub include_failed: bool = false,
            }
        }

        impl Section for $name {
            fn validate(&self, p: &str) -> Result<(), ConfigError> {
                at_least_one(&format!("{p}.max_keys"), self.max_keys)
            }
        }

        impl PerEventSection for $name {
            const BEHAVIOUR: Behaviour = $behaviour;
            const TITLE: &'static str = $title;
            fn novelty(&self) -> bool {
                self.novelty
            }
            fn novelty_warmup(&self) -> Duration {
                self.novelty_warmup
            }
            fn max_keys(&self) -> usize {
                self.max_keys
            }
            fn include_failed(&self) -> bool {
                self.include_failed
            }
        }

        $(#[$meta])*
        pub type $detector = PerEvent<$name>;
    };
}

per_event_config!(
    /// `[detectors.tenant_settings]` (T1578.005).
    TenantSettings: TenantSettingsConfig,
    Behaviour::TenantSettings,
    Severity::Medium,
    "Tenant-level setting changed"
);
per_event_config!(
    /// `[detectors.event_trigger]` (T1546).
    EventTrigger: EventTriggerConfig,
    Behaviour::EventTrigger,
    Severity::Medium,
    "Event-triggered execution wired"
);
per_event_config!(
    /// `[detectors.impair_defenses]` (T1562).
    ImpairDefenses: ImpairDefensesConfig,
    Behaviour::ImpairDefenses,
    Severity::High,
    "Security defences impaired"
);
per_event_config!(
    /// `[detectors.conditional_access]` (T1556.009).
    ConditionalAccess: ConditionalAccessConfig,
    Behaviour::ConditionalAccess,
    Severity::High,
    "Conditional access / authentication policy changed"
);
per_event_config!(
    /// `[detectors.serverless]` (T1648).
    Serverless: ServerlessConfig,
    Behaviour::Serverless,
    Severity::Low,
    "Serverless function created or modified"
);

/// Operations remembered per principal for novelty.
const NOVELTY_ITEMS: usize = 256;

/// A per-event detector, of the section `C` (which says its behaviour and title).
pub struct PerEvent<C: PerEventSection> {
    config: C,
    seen: BoundedMap<u64, FirstSeen>,
}

impl<C: PerEventSection> Detector for PerEvent<C> {
    type Config = C;
    const ROUTE: Route = Route::Principal;
    /// Stateless (but for novelty), so late events count too.
    const LATE_EVENTS: bool = true;

    fn new(config: C, _shared: &Shared) -> Self {
        let keys = if config.novelty() {
            config.max_keys()
        } else {
            1
        };
        PerEvent {
            seen: BoundedMap::new(keys),
            config,
        }
    }

    fn name(&self) -> &'static str {
        C::BEHAVIOUR.as_str()
    }

    fn behaviour(&self) -> Behaviour {
        C::BEHAVIOUR
    }

    tables! { 0 => seen }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        if !ctx.matches.has(C::BEHAVIOUR) {
            return;
        }
        let ev = ctx.ev;
        if ev.status == Outcome::Failure && !self.config.include_failed() {
            return;
        }
        let dry_run = match self.config.mode(&ev.cloud_account_uid, &ev.actor_user_uid) {
            Mode::Off => return,
            Mode::Live => false,
            Mode::DryRun => true,
        };
        let mut trigger = "match";
        if self.config.novelty() {
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
            match seen.observe(
                ev.time,
                item,
                ms(self.config.novelty_warmup()),
                NOVELTY_ITEMS,
            ) {
                Novelty::Known | Novelty::WarmingUp => return,
                Novelty::New | Novelty::Full => trigger = "novelty",
            }
        }
        let mut title = format!(
            "{}: {} by {} in {} {}",
            C::TITLE,
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
            C::BEHAVIOUR,
            title,
            self.config.severity(),
            dry_run,
            trigger,
        ));
    }
}
