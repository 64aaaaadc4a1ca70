//! A resolver of the OCSF 1.8.0 schema sources (`tests/fixtures/ocsf/schema/`, the files the
//! resolved classes reach) and a checker of documents against a resolved class.
//!
//! The sources are not a JSON Schema: a class `extends` its parent, `$include`s profiles whose
//! attributes count only when the event lists the profile in `metadata.profiles`, takes each
//! attribute's type, array-ness, enum and sibling from `dictionary.json` (a class's enum values
//! are merged over the dictionary's), and, under the `datetime` profile, gains an `<attr>_dt`
//! (RFC 3339) beside every `timestamp_t`. Objects resolve the same way, on demand, when a value
//! uses them. A document is checked at every object level for unknown attributes, attributes of
//! profiles it does not apply, missing required attributes, `at_least_one` constraints, types
//! (base types, `range`, `max_len`; `ip_t` and `datetime_t` parsed; other regexes are not
//! checked), enum values and their caption siblings, and the class's own `class_uid`,
//! `category_uid` and `type_uid`.
//!
//! `OCSF_TRACE_DIR=<full schema dir>` resolves from there instead and prints (`TRACE <path>`)
//! every file read: the list to copy when a new class or object is needed.

use crate::util::fixture;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
/// One resolved attribute.
#[derive(Debug, Clone)]
struct Attr {
    /// A dictionary type (`string_t`, …), `object` (any object), or an object name.
    ty: String,
    is_array: bool,
    required: bool,
    /// The profile that brings it, if any.
    profile: Option<String>,
    /// enum value → caption.
    enumeration: BTreeMap<String, String>,
    sibling: Option<String>,
}

/// A resolved class or object.
#[derive(Debug)]
pub struct Def {
    name: String,
    attrs: BTreeMap<String, Attr>,
    at_least_one: Vec<String>,
}

pub struct Schema {
    root: PathBuf,
    dictionary: Map<String, Value>,
    types: Map<String, Value>,
    categories: Map<String, Value>,
    objects: RefCell<HashMap<String, Rc<Def>>>,
}

thread_local! {
    static TRACE: RefCell<BTreeSet<PathBuf>> = const { RefCell::new(BTreeSet::new()) };
}

fn read_json(path: &Path) -> Value {
    TRACE.with(|t| t.borrow_mut().insert(path.to_owned()));
    read_json_untraced(path)
}

fn read_json_untraced(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(found) = find_file(&p, name) {
                return Some(found);
            }
        } else if p.file_name().is_some_and(|f| f == name) {
            return Some(p);
        }
    }
    None
}

/// Deep merge of `over` onto `base` (objects merged key by key, anything else replaced).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl Schema {
    fn load(root: PathBuf) -> Schema {
        let dict = read_json(&root.join("dictionary.json"));
        let version = read_json(&root.join("version.json"));
        assert_eq!(version["version"], "1.8.0");
        Schema {
            dictionary: dict["attributes"].as_object().unwrap().clone(),
            types: dict["types"]["attributes"].as_object().unwrap().clone(),
            categories: read_json(&root.join("categories.json"))["attributes"]
                .as_object()
                .unwrap()
                .clone(),
            root,
            objects: RefCell::new(HashMap::new()),
        }
    }

    pub fn shipped() -> Schema {
        match std::env::var_os("OCSF_TRACE_DIR") {
            Some(d) => Schema::load(PathBuf::from(d)),
            None => Schema::load(fixture("ocsf/schema")),
        }
    }

    /// The raw (unresolved) attribute map and the file's JSON, with `extends` and `$include`
    /// applied; attributes from a profile file carry `"profile": <name>` unless they say otherwise.
    fn raw(&self, file: &Path, is_class: bool) -> (Value, Value) {
        let doc = read_json(file);
        let mut attrs = match doc.get("extends").and_then(Value::as_str) {
            Some("object") | None => json!({}),
            Some(parent) => {
                let path = if is_class {
                    find_file(&self.root.join("events"), &format!("{parent}.json"))
                        .unwrap_or_else(|| panic!("class {parent} not shipped"))
                } else {
                    self.root.join("objects").join(format!("{parent}.json"))
                };
                self.raw(&path, is_class).0
            }
        };
        let own = doc["attributes"].as_object().cloned().unwrap_or_default();
        if let Some(includes) = own.get("$include").and_then(Value::as_array) {
            for inc in includes {
                let inc_doc = read_json(&self.root.join(inc.as_str().unwrap()));
                let profile = (inc_doc["meta"] == "profile").then(|| inc_doc["name"].clone());
                for (k, v) in inc_doc["attributes"].as_object().unwrap() {
                    let mut v = v.clone();
                    if let Some(p) = &profile {
                        if v.get("profile").is_none() {
                            v["profile"] = p.clone();
                        }
                    }
                    merge(&mut attrs, &json!({ k: v }));
                }
            }
        }
        for (k, v) in own {
            if k != "$include" {
                merge(&mut attrs, &json!({ k: v }));
            }
        }
        (attrs, doc)
    }

    /// Attributes from raw definitions + the dictionary; `_dt` siblings for timestamps.
    fn resolve(&self, name: &str, raw: &Value, constraints: Vec<String>) -> Def {
        let mut attrs = BTreeMap::new();
        for (k, v) in raw.as_object().unwrap() {
            let d = self
                .dictionary
                .get(k)
                .unwrap_or_else(|| panic!("{name}.{k} is not in the dictionary"));
            let mut enumeration = BTreeMap::new();
            for source in [d.get("enum"), v.get("enum")].into_iter().flatten() {
                for (id, e) in source.as_object().unwrap() {
                    enumeration.insert(id.clone(), e["caption"].as_str().unwrap().to_owned());
                }
            }
            let attr = Attr {
                ty: d["type"].as_str().unwrap().to_owned(),
                is_array: d["is_array"].as_bool().unwrap_or(false),
                required: v["requirement"] == "required",
                profile: v["profile"].as_str().map(str::to_owned),
                enumeration,
                sibling: d["sibling"].as_str().map(str::to_owned),
            };
            if attr.ty == "timestamp_t"
                && !raw.as_object().unwrap().contains_key(&format!("{k}_dt"))
            {
                let dt = Attr {
                    ty: "datetime_t".into(),
                    is_array: attr.is_array,
                    required: false,
                    profile: Some("datetime".into()),
                    enumeration: BTreeMap::new(),
                    sibling: None,
                };
                attrs.insert(format!("{k}_dt"), dt);
            }
            attrs.insert(k.clone(), attr);
        }
        if let Some(obs) = attrs.get_mut("type_id").filter(|_| name == "observable") {
            obs.enumeration.extend(self.observable_types());
        }
        Def {
            name: name.to_owned(),
            attrs,
            at_least_one: constraints,
        }
    }

    /// Observable `type_id`s: every type, object and attribute the shipped sources mark
    /// `observable` (a subset of the compiled schema's list, so never too lenient).
    fn observable_types(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut note = |v: &Value, caption: String| {
            if let Some(id) = v.get("observable").and_then(Value::as_u64) {
                out.insert(id.to_string(), caption);
            }
        };
        for (k, t) in &self.types {
            note(t, t["caption"].as_str().unwrap_or(k).to_owned());
        }
        for (k, a) in &self.dictionary {
            note(a, a["caption"].as_str().unwrap_or(k).to_owned());
        }
        for entry in std::fs::read_dir(self.root.join("objects"))
            .unwrap()
            .flatten()
        {
            let o = read_json_untraced(&entry.path());
            let caption = o["caption"].as_str().unwrap_or("").to_owned();
            note(&o, caption.clone());
            for (k, a) in o["attributes"].as_object().unwrap() {
                note(a, format!("{caption}: {k}"));
            }
        }
        out
    }

    fn object(&self, name: &str) -> Rc<Def> {
        if let Some(d) = self.objects.borrow().get(name) {
            return d.clone();
        }
        let path = self.root.join("objects").join(format!("{name}.json"));
        assert!(
            path.exists(),
            "object {name} is not shipped in {}",
            self.root.display()
        );
        let (raw, _) = self.raw(&path, false);
        let def = Rc::new(self.resolve(name, &raw, self.constraints(&path, false)));
        self.objects
            .borrow_mut()
            .insert(name.to_owned(), def.clone());
        def
    }

    /// `at_least_one` of the file or, failing that, of its nearest ancestor.
    fn constraints(&self, path: &Path, is_class: bool) -> Vec<String> {
        let doc = read_json(path);
        if let Some(list) = doc["constraints"]["at_least_one"].as_array() {
            return list
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
        }
        match doc["extends"].as_str() {
            Some("object") | None => Vec::new(),
            Some(parent) if is_class => self.constraints(
                &find_file(&self.root.join("events"), &format!("{parent}.json")).unwrap(),
                true,
            ),
            Some(parent) => self.constraints(
                &self.root.join("objects").join(format!("{parent}.json")),
                false,
            ),
        }
    }

    /// A class by file name (`detection_finding`), with its uids as enums.
    pub fn class(&self, name: &str) -> Def {
        let path = find_file(&self.root.join("events"), &format!("{name}.json"))
            .unwrap_or_else(|| panic!("class {name} not shipped"));
        let (raw, doc) = self.raw(&path, true);
        let mut def = self.resolve(name, &raw, self.constraints(&path, true));
        let category = self.category_of(&path);
        let cat = &self.categories[&category];
        let category_uid = cat["uid"].as_u64().unwrap();
        let class_uid = category_uid * 1000 + doc["uid"].as_u64().unwrap();
        let caption = doc["caption"].as_str().unwrap().to_owned();
        let pin = |def: &mut Def, attr: &str, values: BTreeMap<String, String>| {
            def.attrs.get_mut(attr).unwrap().enumeration = values;
        };
        pin(
            &mut def,
            "category_uid",
            [(
                category_uid.to_string(),
                cat["caption"].as_str().unwrap().to_owned(),
            )]
            .into(),
        );
        pin(
            &mut def,
            "class_uid",
            [(class_uid.to_string(), caption.clone())].into(),
        );
        let types = def.attrs["activity_id"]
            .enumeration
            .iter()
            .map(|(id, c)| {
                (
                    (class_uid * 100 + id.parse::<u64>().unwrap()).to_string(),
                    format!("{caption}: {c}"),
                )
            })
            .collect();
        pin(&mut def, "type_uid", types);
        def
    }

    fn category_of(&self, path: &Path) -> String {
        let doc = read_json(path);
        match doc["category"].as_str() {
            Some(c) => c.to_owned(),
            None => {
                let parent = doc["extends"].as_str().unwrap();
                self.category_of(
                    &find_file(&self.root.join("events"), &format!("{parent}.json")).unwrap(),
                )
            }
        }
    }

    /// Every violation in `doc` as an instance of `class`, one line each.
    pub fn check(&self, class: &Def, doc: &Value) -> Vec<String> {
        let profiles: BTreeSet<String> = doc["metadata"]["profiles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut errors = Vec::new();
        self.check_object(class, doc, "", &profiles, &mut errors);
        errors
    }

    fn check_object(
        &self,
        def: &Def,
        v: &Value,
        path: &str,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        let Some(obj) = v.as_object() else {
            errors.push(format!("{path}: not an object ({})", def.name));
            return;
        };
        let applies = |a: &Attr| a.profile.as_ref().is_none_or(|p| profiles.contains(p));
        for (k, value) in obj {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match def.attrs.get(k) {
                None => errors.push(format!("{at}: unknown attribute of {}", def.name)),
                Some(a) if !applies(a) => errors.push(format!(
                    "{at}: attribute of profile {} which is not applied",
                    a.profile.as_deref().unwrap_or("")
                )),
                Some(_) if value.is_null() => errors.push(format!("{at}: null")),
                Some(a) => {
                    self.check_attr(a, value, &at, profiles, errors);
                    if let (Some(sibling), Some(id)) = (&a.sibling, value.as_i64()) {
                        let caption = a.enumeration.get(&id.to_string());
                        match (obj.get(sibling), caption) {
                            (Some(s), Some(c)) if id != 99 && s.as_str() != Some(c) => {
                                errors.push(format!("{at}: {id} is {c:?} but {sibling} is {s}"))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        for (k, a) in &def.attrs {
            if a.required && applies(a) && obj.get(k).is_none_or(Value::is_null) {
                errors.push(format!(
                    "{path}: required attribute {k} of {} missing",
                    def.name
                ));
            }
        }
        if !def.at_least_one.is_empty() && !def.at_least_one.iter().any(|k| obj.contains_key(k)) {
            errors.push(format!(
                "{path}: {} needs one of {:?}",
                def.name, def.at_least_one
            ));
        }
    }

    fn check_attr(
        &self,
        a: &Attr,
        v: &Value,
        at: &str,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        if a.is_array {
            match v.as_array() {
                Some(items) => {
                    let one = Attr {
                        is_array: false,
                        ..a.clone()
                    };
                    for (i, item) in items.iter().enumerate() {
                        self.check_attr(&one, item, &format!("{at}[{i}]"), profiles, errors);
                    }
                }
                None => errors.push(format!("{at}: not an array")),
            }
            return;
        }
        if !a.enumeration.is_empty() {
            let known = v
                .as_i64()
                .is_some_and(|id| a.enumeration.contains_key(&id.to_string()));
            if !known {
                errors.push(format!(
                    "{at}: {v} is not one of {:?}",
                    a.enumeration.keys().collect::<Vec<_>>()
                ));
            }
        }
        if a.ty == "object" {
            if !v.is_object() {
                errors.push(format!("{at}: not an object"));
            }
            return;
        }
        if !a.ty.ends_with("_t") {
            let def = self.object(&a.ty);
            self.check_object(&def, v, at, profiles, errors);
            return;
        }
        if let Err(e) = self.check_type(&a.ty, v) {
            errors.push(format!("{at}: {e}"));
        }
    }

    /// A value against a dictionary type (and the types it derives from).
    fn check_type(&self, ty: &str, v: &Value) -> Result<(), String> {
        let t = self
            .types
            .get(ty)
            .ok_or_else(|| format!("unknown type {ty}"))?;
        let ok = match ty {
            "string_t" => v.is_string(),
            "integer_t" | "long_t" => v.is_i64() || v.is_u64(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            "ip_t" => v
                .as_str()
                .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
            "datetime_t" => v
                .as_str()
                .is_some_and(|s| cloudwarden::event::time::parse_rfc3339_ms(s).is_some()),
            _ => true,
        };
        if !ok {
            return Err(format!("{v} is not a {ty}"));
        }
        if let (Some(max), Some(s)) = (t["max_len"].as_u64(), v.as_str()) {
            if s.len() as u64 > max {
                return Err(format!("longer than {max}"));
            }
        }
        if let (Some([lo, hi]), Some(n)) = (t["range"].as_array().map(Vec::as_slice), v.as_i64()) {
            if n < lo.as_i64().unwrap() || n > hi.as_i64().unwrap() {
                return Err(format!("{n} outside {lo}..{hi}"));
            }
        }
        match t["type"].as_str() {
            Some(base) if base != ty => self.check_type(base, v),
            _ => Ok(()),
        }
    }
}

/// Prints the files read so far (with `OCSF_TRACE_DIR` set).
pub fn print_trace() {
    if std::env::var_os("OCSF_TRACE_DIR").is_some() {
        TRACE.with(|t| {
            for p in t.borrow().iter() {
                println!("TRACE {}", p.display());
            }
        });
    }
}
