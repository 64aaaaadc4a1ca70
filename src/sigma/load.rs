//! Loading Sigma rules: files (and globs) → parsed collections (rsigma-parser) → pipelines →
//! log-source route → compiled detection rules (rsigma-eval), each with a stable index.
//!
//! A rule that cannot run is kept as [`Unsupported`] with the reason (parse error with the file,
//! unknown log source, unmapped field, compile error); it never stops the others. Correlation
//! rules are kept parsed for the correlation stage, which refers to detection rules by id or
//! name ([`Rules::by_reference`]).

use super::config::SigmaConfig;
use super::fields::Route;
use crate::config::{invalid, ConfigError};
use crate::sigma::correlation::{self, Consumer, CorrelationSettings, Correlations, DetectionRef};
use rsigma_eval::{CompiledRule, Pipeline, RuleFieldSet};
use rsigma_parser::{CorrelationRule, SigmaCollection, SigmaRule};
use std::path::{Path, PathBuf};

/// One loaded detection rule. Its position in [`Rules::detections`] is its index.
#[derive(Debug, Clone)]
pub struct DetectionRule {
    pub index: u16,
    /// `id`, else `name`, else the title.
    pub id: String,
    pub name: Option<String>,
    pub title: String,
    pub level: Option<rsigma_parser::Level>,
    pub author: Option<String>,
    pub tags: Vec<String>,
    pub techniques: Vec<String>,
    pub route: Route,
    pub file: String,
    pub compiled: CompiledRule,
    /// After `enabled` / `disabled`.
    pub runs: bool,
    pub dry_run: bool,
    /// Scope patterns in which this rule raises no alert.
    pub allow_scopes: Vec<String>,
}

impl DetectionRule {
    /// The rule's level as alerts write it (absent: medium).
    pub fn level_text(&self) -> &'static str {
        crate::sigma::meta::severity(self.level).as_str()
    }

    /// Rule id, name, a tag (case-insensitive) or `*`.
    pub fn selected_by(&self, selector: &str) -> bool {
        selector == "*"
            || self.id == selector
            || self.name.as_deref() == Some(selector)
            || self.tags.iter().any(|t| t.eq_ignore_ascii_case(selector))
    }
}

/// A rule that does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub file: String,
    pub title: String,
    pub id: Option<String>,
    /// `product/service` as the rule writes it.
    pub logsource: String,
    pub reason: String,
}

/// The custom attribute that carries a rule's [`DetectionRule::index`] through rsigma's engine
/// into its results.
const INDEX_ATTRIBUTE: &str = "cloudwarden.index";

/// One route's running rules in an [`rsigma_eval::Engine`]: its candidate index (exact,
/// presence and substring witnesses per field) leaves out the rules an event cannot match, so
/// an event costs the few rules it could match, not all of them; each result names its rule by
/// [`RouteEngine::index_of`]. Match detail and bloom prefilter stay at the engine's defaults
/// (off), so results equal `rsigma_eval::evaluate_rule`'s rule by rule.
#[derive(Clone)]
pub struct RouteEngine(std::sync::Arc<rsigma_eval::Engine>);

impl std::fmt::Debug for RouteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RouteEngine")
            .field(&self.0.rules().len())
            .finish()
    }
}

impl RouteEngine {
    /// The engine of `rules` (`None`: there are none).
    fn new<'r>(rules: impl Iterator<Item = &'r DetectionRule>) -> Option<RouteEngine> {
        let compiled: Vec<CompiledRule> = rules
            .map(|r| {
                let mut c = r.compiled.clone();
                std::sync::Arc::make_mut(&mut c.custom_attributes)
                    .insert(INDEX_ATTRIBUTE.to_owned(), serde_json::json!(r.index));
                c
            })
            .collect();
        if compiled.is_empty() {
            return None;
        }
        let mut engine = rsigma_eval::Engine::new();
        engine.extend_compiled_rules(compiled);
        Some(RouteEngine(std::sync::Arc::new(engine)))
    }

    /// Every running rule of the route that matches `event`.
    pub fn evaluate(&self, event: &impl rsigma_eval::Event) -> Vec<rsigma_eval::EvaluationResult> {
        self.0.evaluate(event)
    }

    /// The [`DetectionRule::index`] a result of [`RouteEngine::evaluate`] is for.
    pub fn index_of(result: &rsigma_eval::EvaluationResult) -> Option<u16> {
        result
            .header
            .custom_attributes
            .get(INDEX_ATTRIBUTE)
            .and_then(serde_json::Value::as_u64)
            .and_then(|i| u16::try_from(i).ok())
    }
}

/// The loaded rule set.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub detections: Vec<DetectionRule>,
    pub unsupported: Vec<Unsupported>,
    pub correlations: Vec<CorrelationRule>,
    /// Files that failed to read or parse as a whole.
    pub file_errors: Vec<(String, String)>,
    /// Per route ([`Route::index`]): an rsigma engine over its running rules, whose candidate
    /// index picks the rules an event can match before any is evaluated (see [`RouteEngine`]).
    engines: Vec<Option<RouteEngine>>,
    /// The correlation rules' settings, and what compiling them found (see [`Rules::link`]).
    pub correlation_settings: CorrelationSettings,
    /// Correlation rules that do not run, and why.
    pub correlation_unsupported: Vec<correlation::Unsupported>,
    /// Correlation rules that run.
    pub correlations_loaded: usize,
    /// Per detection rule: the correlations that consume its matches.
    consumers: Vec<Vec<Consumer>>,
    /// Per detection rule: it is referenced only by correlations with `generate: false` (the
    /// Sigma default), so its matches feed them and raise no alert of their own.
    quiet: Vec<bool>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.detections.is_empty()
    }

    pub fn get(&self, index: u16) -> Option<&DetectionRule> {
        self.detections.get(usize::from(index))
    }

    /// A detection rule by id or name (how correlation rules refer to them).
    pub fn by_reference(&self, reference: &str) -> Option<&DetectionRule> {
        self.detections
            .iter()
            .find(|r| r.id == reference || r.name.as_deref() == Some(reference))
    }

    /// Loads files with pipelines; no selection (every loadable rule runs).
    pub fn load_files(files: &[PathBuf], pipelines: &[Pipeline]) -> Rules {
        let mut rules = Rules::default();
        for file in files {
            rules.load_file(file, pipelines);
        }
        rules.index();
        rules.link(&CorrelationSettings::default());
        rules
    }

    fn load_file(&mut self, file: &Path, pipelines: &[Pipeline]) {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                self.file_errors.push((name, e.to_string()));
                return;
            }
        };
        let collection = match rsigma_parser::parse_sigma_yaml(&text) {
            Ok(c) => c,
            Err(e) => {
                self.file_errors.push((name.clone(), e.to_string()));
                self.unsupported.push(Unsupported {
                    file: name,
                    title: String::new(),
                    id: None,
                    logsource: String::new(),
                    reason: format!("parse error: {e}"),
                });
                return;
            }
        };
        for e in &collection.errors {
            self.file_errors.push((name.clone(), e.clone()));
            self.unsupported.push(Unsupported {
                file: name.clone(),
                title: String::new(),
                id: None,
                logsource: String::new(),
                reason: format!("parse error: {e}"),
            });
        }
        self.correlations
            .extend(collection.correlations.iter().cloned());
        for rule in collection.rules {
            self.load_rule(&name, rule, pipelines);
        }
    }

    fn load_rule(&mut self, file: &str, mut rule: SigmaRule, pipelines: &[Pipeline]) {
        let logsource = format!(
            "{}/{}",
            rule.logsource.product.as_deref().unwrap_or("-"),
            rule.logsource.service.as_deref().unwrap_or("-")
        );
        let unsupported = |rule: &SigmaRule, reason: String| Unsupported {
            file: file.to_owned(),
            title: rule.title.clone(),
            id: rule.id.clone(),
            logsource: logsource.clone(),
            reason,
        };
        if let Err(e) = rsigma_eval::apply_pipelines(pipelines, &mut rule) {
            let u = unsupported(&rule, format!("pipeline: {e}"));
            self.unsupported.push(u);
            return;
        }
        let Some(route) = Route::of_logsource(
            rule.logsource.product.as_deref(),
            rule.logsource.service.as_deref(),
        ) else {
            let u = unsupported(&rule, format!("unknown log source {logsource}"));
            self.unsupported.push(u);
            return;
        };
        let mut one = SigmaCollection::new();
        one.rules.push(rule.clone());
        let fields = RuleFieldSet::collect(&one, &[], false);
        if let Some(reason) = fields.names().find_map(|f| route.unmappable(f)) {
            let u = unsupported(&rule, reason);
            self.unsupported.push(u);
            return;
        }
        let compiled = match rsigma_eval::compile_rule(&rule) {
            Ok(c) => c,
            Err(e) => {
                let u = unsupported(&rule, format!("cannot compile: {e}"));
                self.unsupported.push(u);
                return;
            }
        };
        let Ok(index) = u16::try_from(self.detections.len()) else {
            let u = unsupported(&rule, "more than 65535 detection rules".to_owned());
            self.unsupported.push(u);
            return;
        };
        self.detections.push(DetectionRule {
            index,
            id: rule
                .id
                .clone()
                .or_else(|| rule.name.clone())
                .unwrap_or_else(|| rule.title.clone()),
            name: rule.name.clone(),
            title: rule.title.clone(),
            level: rule.level,
            author: rule.author.clone(),
            techniques: super::meta::techniques(&rule.tags),
            tags: rule.tags,
            route,
            file: file.to_owned(),
            compiled,
            runs: true,
            dry_run: false,
            allow_scopes: Vec::new(),
        });
    }

    /// The engine of a route's running rules (`None`: the route has none).
    pub fn engine_of(&self, route: Route) -> Option<&RouteEngine> {
        self.engines.get(route.index())?.as_ref()
    }

    fn index(&mut self) {
        self.engines = Route::ALL
            .iter()
            .map(|&route| {
                RouteEngine::new(
                    self.detections
                        .iter()
                        .filter(|r| r.runs && r.route == route),
                )
            })
            .collect();
    }

    /// Loads what a `[sigma]` section names and applies its selections; errors name the key.
    pub fn from_config(cfg: &SigmaConfig) -> Result<Rules, ConfigError> {
        if cfg.rules.is_empty() {
            return Ok(Rules::default());
        }
        crate::config::at_least_one("sigma.max_rules", cfg.max_rules)?;
        let c = &cfg.correlation;
        crate::config::at_least_one("sigma.correlation.max_keys", c.max_keys)?;
        crate::config::at_least_one("sigma.correlation.panes", c.panes as usize)?;
        crate::config::at_least_one("sigma.correlation.max_distinct", c.max_distinct)?;
        crate::config::at_least_one("sigma.correlation.max_evidence", c.max_evidence)?;
        let mut files = Vec::new();
        for (i, pattern) in cfg.rules.iter().enumerate() {
            let found = expand(pattern).map_err(|m| invalid(format!("sigma.rules[{i}]"), m))?;
            if found.is_empty() {
                return Err(invalid(
                    format!("sigma.rules[{i}]"),
                    format!("`{pattern}` matches no rule file"),
                ));
            }
            files.extend(found);
        }
        files.sort();
        files.dedup();
        let mut pipelines = Vec::new();
        for (i, p) in cfg.pipelines.iter().enumerate() {
            let pipeline = rsigma_eval::parse_pipeline_file(Path::new(p))
                .map_err(|e| invalid(format!("sigma.pipelines[{i}]"), format!("{p}: {e}")))?;
            pipelines.push(pipeline);
        }
        let mut rules = Rules::load_files(&files, &pipelines);
        if rules.detections.len() > cfg.max_rules {
            return Err(invalid(
                "sigma.max_rules",
                format!(
                    "{} detection rules loaded, more than the {} allowed",
                    rules.detections.len(),
                    cfg.max_rules
                ),
            ));
        }
        let check = |key: &str, list: &[String], rules: &Rules| -> Result<(), ConfigError> {
            for (i, s) in list.iter().enumerate() {
                let known = rules.detections.iter().any(|r| r.selected_by(s))
                    || rules
                        .unsupported
                        .iter()
                        .any(|u| u.id.as_deref() == Some(s.as_str()));
                if !known {
                    return Err(invalid(
                        format!("{key}[{i}]"),
                        format!("`{s}` is no loaded rule's id, name or tag"),
                    ));
                }
            }
            Ok(())
        };
        check("sigma.enabled", &cfg.enabled, &rules)?;
        check("sigma.disabled", &cfg.disabled, &rules)?;
        check("sigma.dry_run", &cfg.dry_run, &rules)?;
        for (i, a) in cfg.allow.iter().enumerate() {
            check(&format!("sigma.allow[{i}].rules"), &a.rules, &rules)?;
            if a.scope.is_empty() {
                return Err(invalid(
                    format!("sigma.allow[{i}].scope"),
                    "must not be empty",
                ));
            }
        }
        for r in &mut rules.detections {
            let sel = |list: &[String]| list.iter().any(|s| r.selected_by(s));
            let runs = (cfg.enabled.is_empty() || sel(&cfg.enabled)) && !sel(&cfg.disabled);
            let dry_run = sel(&cfg.dry_run);
            r.runs = runs;
            r.dry_run = dry_run;
            r.allow_scopes = cfg
                .allow
                .iter()
                .filter(|a| a.rules.iter().any(|s| r.selected_by(s)))
                .map(|a| a.scope.clone())
                .collect();
        }
        rules.index();
        rules.link(&cfg.correlation);
        Ok(rules)
    }

    /// Compiles the correlation rules against the detection rules once, to learn which
    /// correlations consume which rule's matches (stage 1 needs that, not the state) and which
    /// correlations cannot run.
    pub fn link(&mut self, settings: &CorrelationSettings) {
        self.correlation_settings = settings.clone();
        let (c, unsupported) = self.compile_correlations();
        self.correlation_unsupported = unsupported;
        self.correlations_loaded = c.len();
        self.consumers = (0..self.detections.len())
            .map(|d| c.consumers(d).to_vec())
            .collect();
        self.quiet = (0..self.detections.len())
            .map(|d| {
                let consumers = c.consumers(d);
                !consumers.is_empty()
                    && consumers.iter().all(|k| {
                        let id = c.rule_id(k.correlation);
                        !self.correlations.iter().any(|r| {
                            let name = r.id.as_deref().or(r.name.as_deref());
                            r.generate && Some(name.unwrap_or(r.title.as_str())) == id
                        })
                    })
            })
            .collect();
    }

    fn compile_correlations(&self) -> (Correlations, Vec<correlation::Unsupported>) {
        let refs: Vec<DetectionRef> = self
            .detections
            .iter()
            .map(|r| DetectionRef {
                id: Some(r.id.clone()),
                name: r.name.clone(),
                title: r.title.clone(),
                tags: r.tags.clone(),
            })
            .collect();
        Correlations::new(&self.correlations, &refs, &self.correlation_settings)
    }

    /// Fresh correlation state for the loaded correlation rules (none loaded: `None`).
    pub fn new_correlations(&self) -> Option<Correlations> {
        if self.correlations_loaded == 0 {
            return None;
        }
        Some(self.compile_correlations().0)
    }

    /// The correlations that consume detection rule `detection`'s matches.
    pub fn consumers(&self, detection: u16) -> &[Consumer] {
        self.consumers
            .get(usize::from(detection))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether rule `detection` only feeds correlations (`generate: false`): no alert of its own.
    pub fn quiet(&self, detection: u16) -> bool {
        self.quiet
            .get(usize::from(detection))
            .copied()
            .unwrap_or(false)
    }

    /// Loaded / unsupported counts per log source, sorted.
    pub fn summary(&self) -> Vec<(String, usize, usize)> {
        let mut m: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for r in &self.detections {
            m.entry(r.route.as_str().to_owned()).or_default().0 += 1;
        }
        for u in &self.unsupported {
            m.entry(u.logsource.clone()).or_default().1 += 1;
        }
        m.into_iter().map(|(k, (a, b))| (k, a, b)).collect()
    }
}

/// A path, a directory (its `*.yml` / `*.yaml`, recursively) or a glob → rule files, sorted.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let is_glob = pattern.contains(['*', '?', '[', '{']);
    if !is_glob {
        let p = Path::new(pattern);
        if p.is_dir() {
            let mut out = Vec::new();
            walk(p, &mut out).map_err(|e| format!("{pattern}: {e}"))?;
            out.retain(|f| is_yaml(f));
            out.sort();
            return Ok(out);
        }
        if p.is_file() {
            return Ok(vec![p.to_path_buf()]);
        }
        return Err(format!("`{pattern}`: no such file or directory"));
    }
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("bad glob `{pattern}`: {e}"))?
        .compile_matcher();
    // Walk from the longest leading part without glob characters.
    let mut base = PathBuf::new();
    for comp in Path::new(pattern).components() {
        let s = comp.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[', '{']) {
            break;
        }
        base.push(comp);
    }
    if base.as_os_str().is_empty() {
        base.push(".");
    }
    let mut all = Vec::new();
    if base.is_dir() {
        walk(&base, &mut all).map_err(|e| format!("{}: {e}", base.display()))?;
    }
    let strip_dot = !pattern.starts_with("./");
    let mut out: Vec<PathBuf> = all
        .into_iter()
        .filter(|f| {
            let f = if strip_dot {
                f.strip_prefix(".").unwrap_or(f)
            } else {
                f
            };
            glob.is_match(f)
        })
        .collect();
    out.sort();
    Ok(out)
}

fn is_yaml(f: &Path) -> bool {
    matches!(
        f.extension().and_then(|e| e.to_str()),
        Some("yml") | Some("yaml")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
