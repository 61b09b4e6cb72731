//! Holds the configuration reference (docs/CONFIGURATION.md) to the code: every key the settings
//! have is documented once, with the default `config/default.toml` gives it and its environment
//! variable, and the page (and the production example) names no key the code lacks.

use std::collections::{BTreeMap, BTreeSet};

use super::tests::{JWT, KEY, env};
use super::{DEFAULTS, Settings};

const REFERENCE: &str = include_str!("../../docs/CONFIGURATION.md");
const README: &str = include_str!("../../README.md");
const PRODUCTION: &str = include_str!("../../config/production.toml");

/// One documented key: its default cell and its environment variable cell.
#[derive(Debug)]
struct Row {
    default: String,
    env: String,
}

/// The first `code span` of a table cell.
fn code(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

/// The reference's rows by key; panics on a key documented twice.
fn reference_rows() -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for line in REFERENCE.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(cells.len() >= 5, "a reference row needs key, default, variable: {line}");
        let key = code(cells[1]).unwrap_or_else(|| panic!("no key in {line}"));
        let row = Row { default: cells[2].to_owned(), env: cells[3].to_owned() };
        assert!(rows.insert(key.to_owned(), row).is_none(), "`{key}` is documented twice");
    }
    rows
}

/// Dotted keys and values of a TOML document's leaves.
fn leaves(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let dotted = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => leaves(inner, &format!("{dotted}."), out),
            leaf => {
                out.insert(dotted, leaf.clone());
            }
        }
    }
}

fn toml_leaves(text: &str) -> BTreeMap<String, toml::Value> {
    let table: toml::Table = text.parse().expect("valid TOML");
    let mut out = BTreeMap::new();
    leaves(&table, "", &mut out);
    out
}

/// Every key the settings have: the effective configuration with every optional key set.
fn code_keys() -> BTreeSet<String> {
    let vars = env(&[
        ("KEEL__AUTH__JWT_SECRET", JWT),
        ("KEEL__VAULT__MASTER_KEY", KEY),
        ("KEEL__VAULT__PREVIOUS_MASTER_KEY", "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4="),
        ("KEEL__ADMIN__TOKEN", "admin-token-admin-token-admin-token!"),
        ("KEEL__SINK__POSTGRES__URL", "postgres://keel:secret@127.0.0.1:5432/keel"),
        // The cluster's Postgres is read only in cluster mode.
        ("KEEL__CLUSTER__ENABLED", "true"),
        ("KEEL__CLUSTER__POSTGRES_URL", "postgres://keel:secret@127.0.0.1:5432/keel"),
    ]);
    let settings = Settings::load_with_env(None, vars).expect("every optional key set is valid");
    toml_leaves(&settings.to_redacted_toml().expect("settings print")).into_keys().collect()
}

/// A default as the reference shows it: strings bare (`""` when empty), the rest as TOML.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_reference_documents_exactly_the_keys_the_code_has() {
    let documented: BTreeSet<String> = reference_rows().into_keys().collect();
    let code = code_keys();
    let undocumented: Vec<_> = code.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&code).collect();
    assert!(undocumented.is_empty(), "missing from docs/CONFIGURATION.md: {undocumented:?}");
    assert!(unknown.is_empty(), "docs/CONFIGURATION.md names keys the code lacks: {unknown:?}");
}

#[test]
fn the_reference_gives_each_key_its_default_and_environment_variable() {
    let rows = reference_rows();
    let defaults = toml_leaves(DEFAULTS);
    for (key, row) in &rows {
        let variable = format!("KEEL__{}", key.replace('.', "__").to_uppercase());
        assert_eq!(code(&row.env), Some(variable.as_str()), "`{key}`: environment variable");
        match defaults.get(key) {
            Some(value) => assert_eq!(
                code(&row.default),
                Some(shown(value).as_str()),
                "`{key}`: the default in config/default.toml"
            ),
            None => assert!(
                row.default.starts_with("unset"),
                "`{key}` is not in config/default.toml, so its default is `unset…`, not {}",
                row.default
            ),
        }
    }
    for key in defaults.keys() {
        assert!(rows.contains_key(key), "`{key}` from config/default.toml is not documented");
    }
}

#[test]
fn the_production_example_names_only_keys_the_code_has() {
    let code = code_keys();
    for key in toml_leaves(PRODUCTION).keys() {
        assert!(code.contains(key), "config/production.toml sets `{key}`, which the code lacks");
    }
}

#[test]
fn the_readme_points_at_the_reference_instead_of_keeping_a_copy() {
    assert!(README.contains("](docs/CONFIGURATION.md)"), "the README links the reference");
    // A second table would drift from this one, as the README's did.
    let copied: Vec<_> =
        reference_rows().into_keys().filter(|key| README.contains(&format!("| `{key}`"))).collect();
    assert!(copied.is_empty(), "the README keeps its own rows for {copied:?}");
}
