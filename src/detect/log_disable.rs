//! `log_disable` (T1562.008): logging disabled or modified, alerted on the event itself.
//!
//! Which calls count is the catalog's business (with its request predicates: PutEventSelectors
//! only when management events go off, UpdateSink only with `disabled: true`, …); this detector
//! applies allow-lists, scope overrides and dry-run, and lowers the severity of failed attempts
//! (an AccessDenied StopLogging is still worth a look). Stateless, so late events count too.

use super::{single_event_alert, Detector, EventCtx, Route, Shared};
use crate::alert::{Alert, Severity};
use crate::catalog::Behaviour;
use crate::config::{detector_config, CommonSettings, Mode, Section};
use crate::event::Outcome;

detector_config! {
    /// `[detectors.log_disable]`: logging disabled or modified (T1562.008), per event.
    pub struct LogDisableConfig {
        severity = Severity::High;
        /// Alert on failed attempts too (at one severity lower): an AccessDenied StopLogging is
        /// still an attempt to blind you.
        pub include_failed: bool = true,
    }
}

impl Section for LogDisableConfig {}

pub struct LogDisable {
    config: LogDisableConfig,
}

impl Detector for LogDisable {
    type Config = LogDisableConfig;
    /// Routed with the scope's silence detector, which names the disable that caused a silence.
    const ROUTE: Route = Route::Scope;
    const LATE_EVENTS: bool = true;

    fn new(config: LogDisableConfig, _shared: &Shared) -> Self {
        LogDisable { config }
    }

    fn name(&self) -> &'static str {
        "log_disable"
    }

    fn behaviour(&self) -> Behaviour {
        Behaviour::LogDisable
    }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        if !ctx.matches.has(Behaviour::LogDisable) {
            return;
        }
        let ev = ctx.ev;
        let failed = ev.status == Outcome::Failure;
        if failed && !self.config.include_failed {
            return;
        }
        let dry_run = match self.config.mode(&ev.cloud_account_uid, &ev.actor_user_uid) {
            Mode::Off => return,
            Mode::Live => false,
            Mode::DryRun => true,
        };
        let (severity, attempt) = if failed {
            (
                self.config.severity.lower(),
                "Attempt to disable or modify cloud logging",
            )
        } else {
            (self.config.severity, "Cloud logging disabled or modified")
        };
        let target = ev
            .api_request
            .trail_name
            .as_deref()
            .or(ev.resources.first().map(|r| r.as_ref()));
        let title = match target {
            Some(t) => format!(
                "{attempt}: {} on {t} by {} in {} {}",
                ev.api_operation, ev.actor_user_uid, ev.cloud_provider, ev.cloud_account_uid
            ),
            None => format!(
                "{attempt}: {} by {} in {} {}",
                ev.api_operation, ev.actor_user_uid, ev.cloud_provider, ev.cloud_account_uid
            ),
        };
        out.push(single_event_alert(
            ctx,
            self.name(),
            Behaviour::LogDisable,
            title,
            severity,
            dry_run,
            "match",
        ));
    }
}
