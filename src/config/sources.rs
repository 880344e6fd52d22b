//! Where values come from: the built-in defaults, then the file, then `AUTHRUN_*` environment variables,
//! each layer overriding the one before. figment merges the layers and remembers which gave each value,
//! so every error can name its origin: `authrun.toml:12:1`, `environment variable AUTHRUN_SCRIPT_PATH`, or
//! the built-in default.
//!
//! Variables are mapped to keys through the schema itself: `AUTHRUN_<SECTION>_<KEY>` for every key of
//! every section, `AUTHRUN_<KEY>` for top-level keys. A key added to the schema is settable from the
//! environment with no code here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};
use figment::value::{Dict, Empty, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::ConfigError;
use super::schema::Schema;

/// The short form of `AUTHRUN_TOTP_SECRET`.
const SECRET_SHORT: &str = "AUTHRUN_SECRET";
const PREFIX: &str = "AUTHRUN_";
const DEFAULTS: &str = "built-in defaults";
const FILE: &str = "config file";
const ENVIRONMENT: &str = "environment";

/// The layers of one load, and what is needed to say where a value came from.
pub struct Sources {
    file: Option<File>,
    /// `section.key` -> the variable that set it.
    variables: BTreeMap<String, String>,
    /// Every layer merged.
    merged: Figment,
    /// The defaults and the file only: the file is checked strictly, the environment leniently.
    file_only: Figment,
    /// The defaults as a tree: which keys exist, and an example value for each.
    shape: Dict,
}

/// The config file, parsed.
struct File {
    path: PathBuf,
    text: String,
    dict: Dict,
}

impl Sources {
    /// Reads the file and the `AUTHRUN_*` variables among `env`. Refuses a file that is not TOML and a
    /// variable naming a key that does not exist.
    pub fn read(path: Option<&Path>, env: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let shape = match Value::serialize(Schema::default()).map(Value::into_dict) {
            Ok(Some(dict)) => dict,
            _ => unreachable!("the schema is a struct of sections, so it serializes to a dictionary"),
        };
        let file = path.map(File::read).transpose()?;
        let environment = Environment::read(env, &shape)?;
        let defaults = Layer {
            name: DEFAULTS,
            source: None,
            dict: shape.clone(),
        };
        let mut file_only = Figment::from(defaults);
        if let Some(file) = &file {
            file_only = file_only.merge(Layer {
                name: FILE,
                source: Some(Source::File(file.path.clone())),
                dict: file.dict.clone(),
            });
        }
        let merged = file_only.clone().merge(Layer {
            name: ENVIRONMENT,
            source: None,
            dict: environment.dict,
        });
        Ok(Self {
            file,
            variables: environment.variables,
            merged,
            file_only,
            shape,
        })
    }

    /// The merged configuration. A value of the wrong type is blamed on the layer that gave it.
    pub fn extract(&self) -> Result<Schema, ConfigError> {
        // The file is TOML, typed: `cooldown_seconds = "5"` is refused there as it always was. Variables are
        // text, so "5" is a number wherever the key wants one, and "true", "yes", "on" or "1" a boolean.
        self.file_only
            .extract::<Schema>()
            .map_err(|error| self.type_error(error))?;
        self.merged
            .extract_lossy::<Schema>()
            .map_err(|error| self.type_error(error))
    }

    /// Where the value of `key` (`section.key`) came from, as errors show it.
    pub fn origin(&self, key: &str) -> String {
        match (self.layer(key), &self.file) {
            (ENVIRONMENT, _) => format!("environment variable {}", self.variable(key)),
            (FILE, Some(file)) => file.origin(&key.split('.').collect::<Vec<_>>()),
            (_, Some(file)) => format!(
                "built-in default (not set in {} nor the environment)",
                file.path.display()
            ),
            (_, None) => "built-in default".into(),
        }
    }

    /// Whether `key` was set neither in the file nor in the environment.
    pub fn is_default(&self, key: &str) -> bool {
        self.layer(key) == DEFAULTS
    }

    /// Whether the value of `key` was written in the config file.
    pub fn is_from_file(&self, key: &str) -> bool {
        self.layer(key) == FILE
    }

    /// The name of the layer that gave `key` its value.
    fn layer(&self, key: &str) -> &str {
        self.merged.find_metadata(key).map_or(DEFAULTS, |meta| &meta.name)
    }

    /// The variable that set `key`: `AUTHRUN_SCRIPT_PATH` for `script.path`, or an alias such as
    /// `AUTHRUN_SECRET`.
    fn variable(&self, key: &str) -> String {
        self.variables
            .get(key)
            .cloned()
            .unwrap_or_else(|| format!("{PREFIX}{}", key.replace('.', "_").to_ascii_uppercase()))
    }

    /// A figment error, in terms of the key, where it was written, and how to fix it.
    fn type_error(&self, error: figment::Error) -> ConfigError {
        let path: Vec<&str> = error.path.iter().map(String::as_str).collect();
        if let Kind::UnknownField(name, _) = &error.kind {
            return self.unknown_key(&path, name);
        }
        let from_environment = error
            .metadata
            .as_ref()
            .is_some_and(|meta| meta.name == ENVIRONMENT);
        let key = self.known_prefix(&path);
        // Never the value itself: a secret typed into the wrong key would be shown.
        let expected = match &error.kind {
            Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => described(expected),
            _ => "another kind of value".to_string(),
        };
        let problem = match &error.kind {
            Kind::InvalidType(actual, _) => format!("{} where {expected} is expected", kind_of(actual)),
            Kind::InvalidValue(..) | Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
                format!("the value is out of range: {expected} is expected")
            }
            _ => format!("the value cannot be used here: {expected} is expected"),
        };
        let example = self.example(&key);
        let (origin, fix) = if from_environment {
            let name = self.variable(&key);
            let fix = match example {
                Some(example) => format!("set {name} to {expected} (default {example}), or unset it"),
                None => format!("set {name} to {expected}, or unset it"),
            };
            (format!("environment variable {name}"), fix)
        } else {
            let leaf = path.last().copied().unwrap_or_default();
            let fix = match example {
                Some(example) => format!("write {expected}, as in `{leaf} = {example}` (the default)"),
                None => format!("write {expected}"),
            };
            (self.file_origin(&path), fix)
        };
        ConfigError {
            origin,
            key,
            problem,
            fix,
        }
    }

    /// A key of the file that the schema does not have (the environment's are refused earlier).
    fn unknown_key(&self, path: &[&str], name: &str) -> ConfigError {
        // figment's path ends with the unknown key itself.
        let mut at = path.to_vec();
        if at.last() != Some(&name) {
            at.push(name);
        }
        let section = at[..at.len() - 1].join(".");
        let place = if section.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in [{section}]")
        };
        ConfigError {
            origin: self.file_origin(&at),
            key: name.into(),
            problem: format!("unknown key `{name}` {place}"),
            fix: "correct or remove this key; `authrun example-config` prints every valid key".into(),
        }
    }

    fn file_origin(&self, path: &[&str]) -> String {
        match &self.file {
            Some(file) => file.origin(path),
            None => DEFAULTS.to_string(),
        }
    }

    /// The longest start of `path` that is a key of the schema (an error inside a list names the list).
    fn known_prefix(&self, path: &[&str]) -> String {
        (1..=path.len())
            .rev()
            .map(|end| path[..end].join("."))
            .find(|key| find(&self.shape, key).is_some())
            .unwrap_or_else(|| path.join("."))
    }

    /// The default of `key` written as TOML, when it is a plain value.
    fn example(&self, key: &str) -> Option<String> {
        match find(&self.shape, key)? {
            Value::Num(_, num) => num.to_u128().map(|n| n.to_string()),
            Value::Bool(_, b) => Some(b.to_string()),
            Value::String(_, s) if !s.is_empty() => Some(format!("{s:?}")),
            _ => None,
        }
    }
}

impl File {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            origin: path.display().to_string(),
            key: "(file)".into(),
            problem: format!("cannot be read: {error}"),
            fix: "check the path given with --config or AUTHRUN_CONFIG".into(),
        })?;
        let table = toml::from_str::<toml::Table>(&text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_column(&text, span.start))
                .unwrap_or((1, 1));
            ConfigError {
                origin: format!("{}:{line}:{column}", path.display()),
                key: key_of(error.message()),
                problem: error.message().trim().to_string(),
                fix: "correct or remove this key; `authrun example-config` prints every valid key".into(),
            }
        })?;
        // Every TOML value has a figment counterpart (a date becomes a table), so this only fails on a
        // document that is not a table, which TOML cannot write.
        let dict = Value::serialize(&table)
            .ok()
            .and_then(Value::into_dict)
            .ok_or_else(|| ConfigError {
                origin: path.display().to_string(),
                key: "(file)".into(),
                problem: "this TOML cannot be read as keys and sections".into(),
                fix: "compare it with `authrun example-config`".into(),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            text,
            dict,
        })
    }

    /// `FILE:LINE:COLUMN` of the key at `path`, or of the deepest part of it written in the file.
    fn origin(&self, path: &[&str]) -> String {
        match position(&self.text, path) {
            Some((line, column)) => format!("{}:{line}:{column}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

/// serde names the offending key in its messages ("duplicate key `x`").
fn key_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "(syntax)".into())
}

/// Line and column (from 1) of the key at `path` in TOML `text`; as deep as the file goes.
fn position(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let document = DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut found = None;
    for name in path {
        let Some((key, value)) = table.iter().find(|(key, _)| key.get_ref().as_ref() == *name) else {
            break;
        };
        found = Some(key.span().start);
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    found.map(|offset| line_column(text, offset))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// One layer for figment: a tree of values and the name errors know it by.
struct Layer {
    name: &'static str,
    source: Option<Source>,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let metadata = Metadata::named(self.name);
        match &self.source {
            Some(source) => metadata.source(source.clone()),
            None => metadata,
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The `AUTHRUN_*` variables that name keys, as a tree of values like the file's.
struct Environment {
    dict: Dict,
    variables: BTreeMap<String, String>,
}

impl Environment {
    fn read(env: &[(&str, &str)], shape: &Dict) -> Result<Self, ConfigError> {
        let mut values: BTreeMap<String, (String, Value)> = BTreeMap::new();
        // `AUTHRUN_TOTP_SECRET` wins over the short form, so the short one goes first.
        let mut named: Vec<&(&str, &str)> = env.iter().collect();
        named.sort_by_key(|(name, _)| *name != SECRET_SHORT);
        for &&(name, value) in &named {
            let value = value.trim();
            if value.is_empty() {
                continue; // An empty variable is unset.
            }
            let key = match key_for(name, shape) {
                Mapped::Key(key) => key,
                Mapped::Unknown(key) => return Err(unknown_variable(name, &key)),
                Mapped::NotConfig => continue,
            };
            let parsed = match find(shape, &key) {
                Some(Value::Array(..)) => list(name, &key, value)?,
                _ => Value::from(value.to_string()),
            };
            values.insert(key, (name.to_string(), parsed));
        }
        // A secret from the environment replaces a `secret_file` from the file, and the other way round.
        for (set, cleared) in [
            ("totp.secret", "totp.secret_file"),
            ("totp.secret_file", "totp.secret"),
        ] {
            if let Some((name, _)) = values.get(set)
                && !values.contains_key(cleared)
            {
                let name = name.clone();
                values.insert(cleared.to_string(), (name, Value::from(Empty::None)));
            }
        }
        let mut dict = Dict::new();
        let mut variables = BTreeMap::new();
        for (key, (name, value)) in values {
            insert(&mut dict, &key, value);
            variables.insert(key, name);
        }
        Ok(Self { dict, variables })
    }
}

/// What an `AUTHRUN_*` variable is to the configuration.
#[derive(Debug, PartialEq)]
enum Mapped {
    /// It sets this key (`section.key`, or a top-level key).
    Key(String),
    /// It starts with a section's name but names no key of it (a typo): the `section.key` it would be.
    Unknown(String),
    /// Not a configuration variable (`AUTHRUN_CONFIG`, `AUTHRUN_RUN_ID`, anything else).
    NotConfig,
}

/// Maps a variable's name to a key. Keys contain underscores, so the section is the longest section name
/// the variable starts with, and a top-level key is matched whole.
fn key_for(name: &str, shape: &Dict) -> Mapped {
    if name == SECRET_SHORT {
        return Mapped::Key("totp.secret".into());
    }
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return Mapped::NotConfig;
    };
    let upper = |key: &str| key.to_ascii_uppercase();
    if let Some(key) = shape
        .iter()
        .find(|(key, value)| value.as_dict().is_none() && upper(key) == rest)
    {
        return Mapped::Key(key.0.clone());
    }
    let section = shape
        .iter()
        .filter_map(|(section, value)| Some((section, value.as_dict()?)))
        .filter(|(section, _)| {
            rest.len() > section.len() && rest.starts_with(&format!("{}_", upper(section)))
        })
        .max_by_key(|(section, _)| section.len());
    let Some((section, keys)) = section else {
        return Mapped::NotConfig;
    };
    let wanted = &rest[section.len() + 1..];
    match keys.keys().find(|key| upper(key) == wanted) {
        Some(key) => Mapped::Key(format!("{section}.{key}")),
        None => Mapped::Unknown(format!("{section}.{}", wanted.to_ascii_lowercase())),
    }
}

fn unknown_variable(name: &str, key: &str) -> ConfigError {
    let section = key.split('.').next().unwrap_or_default();
    ConfigError {
        origin: format!("environment variable {name}"),
        key: key.into(),
        problem: format!("[{section}] has no such key"),
        fix: format!(
            "correct the name (AUTHRUN_{}_<KEY>, with a key of [{section}] from `authrun example-config`) or unset it",
            section.to_ascii_uppercase()
        ),
    }
}

/// A list from a variable: TOML's `["a", "b"]`, or items separated by commas (`10.0.0.1, 10.0.0.2`).
fn list(name: &str, key: &str, value: &str) -> Result<Value, ConfigError> {
    if !value.starts_with('[') {
        let items: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect();
        return Ok(Value::from(items));
    }
    value
        .parse::<toml::Value>()
        .ok()
        .and_then(|list| Value::serialize(list).ok())
        .ok_or_else(|| ConfigError {
            origin: format!("environment variable {name}"),
            key: key.into(),
            problem: "this is not a TOML list".into(),
            fix: format!(r#"write it as ["first", "second"] (quoted items), or as items separated by commas, or unset {name}"#),
        })
}

/// The value at `key` (`section.key`) in `dict`.
fn find<'a>(dict: &'a Dict, key: &str) -> Option<&'a Value> {
    let (first, rest) = match key.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (key, None),
    };
    let value = dict.get(first)?;
    match rest {
        Some(rest) => find(value.as_dict()?, rest),
        None => Some(value),
    }
}

fn insert(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        Some((section, rest)) => {
            let entry = dict
                .entry(section.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
        None => {
            dict.insert(key.to_string(), value);
        }
    }
}

/// What serde expected, as a person would say it.
fn described(expected: &str) -> String {
    match expected {
        "u8" => "a whole number from 0 to 255".into(),
        "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "a string" | "path string" => "text in quotes".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list such as [\"a\", \"b\"]".into(),
        other if other.starts_with("struct ") => "a [section] of keys".into(),
        other => other.into(),
    }
}

/// The kind of a refused value, never the value itself.
fn kind_of(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "true or false",
        Actual::Unsigned(_) | Actual::Signed(_) => "a number",
        Actual::Float(_) => "a decimal number",
        Actual::Char(_) | Actual::Str(_) => "text",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another kind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Dict {
        Value::serialize(Schema::default()).unwrap().into_dict().unwrap()
    }

    #[test]
    fn variables_map_to_keys_by_the_longest_section_name() {
        let shape = shape();
        let key = |name: &str| key_for(name, &shape);
        assert_eq!(key("AUTHRUN_BIND"), Mapped::Key("bind".into()));
        assert_eq!(key("AUTHRUN_STATE_DIR"), Mapped::Key("state_dir".into()));
        assert_eq!(
            key("AUTHRUN_SCRIPT_KILL_GRACE_SECONDS"),
            Mapped::Key("script.kill_grace_seconds".into())
        );
        assert_eq!(
            key("AUTHRUN_ACCESS_API_TOKEN_SHA256"),
            Mapped::Key("access.api_token_sha256".into())
        );
        assert_eq!(key("AUTHRUN_SECRET"), Mapped::Key("totp.secret".into()));
        assert_eq!(key("AUTHRUN_SCRIPT_FOO"), Mapped::Unknown("script.foo".into()));
        for other in [
            "AUTHRUN_CONFIG",
            "AUTHRUN_RUN_ID",
            "AUTHRUN_SCRIPT",
            "PATH",
            "AUTHRUN_FUZZ_CASES",
        ] {
            assert_eq!(key(other), Mapped::NotConfig, "{other}");
        }
    }

    #[test]
    fn positions_point_at_the_key_however_the_table_is_written() {
        let text = "bind = \"x\"\n[script]\n# note\n  path = \"a\"\n[totp]\nissuer.x = 1\n";
        assert_eq!(position(text, &["bind"]), Some((1, 1)));
        assert_eq!(position(text, &["script", "path"]), Some((4, 3)));
        assert_eq!(position(text, &["script", "args"]), Some((2, 2)));
        assert_eq!(position(text, &["history", "file"]), None);
    }
}
