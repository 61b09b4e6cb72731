//! A module's params against its JSON Schema (`keel_params_schema`): the schema is checked at
//! upload, and a bot's params against it at creation, so an owner sees every bad field by its
//! path before the module runs (the module's own `keel_init` checks come after).

use serde_json::Value;

/// Most problems reported for one params object.
const MAX_PROBLEMS: usize = 20;

/// One place the params break the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamsProblem {
    /// Where, as dotted names under the params (`""` for the object itself, `grid.levels`,
    /// `levels.0`).
    pub path: String,
    /// What is wrong, in the validator's words.
    pub message: String,
}

/// Checks that `schema` is a JSON Schema Keel can validate params with.
///
/// # Errors
/// Why it is not one.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    jsonschema::validator_for(schema).map(drop).map_err(|e| e.to_string())
}

/// Every place `params` breaks `schema` (at most [`MAX_PROBLEMS`]), ordered by path.
///
/// # Errors
/// The schema itself does not compile (a module stored before its schema was checked).
pub fn validate(schema: &Value, params: &Value) -> Result<Vec<ParamsProblem>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    let mut problems: Vec<ParamsProblem> = validator
        .iter_errors(params)
        .take(MAX_PROBLEMS)
        .map(|error| ParamsProblem {
            path: dotted(error.instance_path().as_str()),
            message: error.to_string(),
        })
        .collect();
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(problems)
}

/// A JSON Pointer (`/a/b~1c`) as dotted names (`a.b/c`).
fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_problem_is_named_by_its_path() {
        let schema = json!({
            "type": "object",
            "required": ["qty"],
            "additionalProperties": false,
            "properties": {
                "qty": {"type": "string"},
                "levels": {"type": "array", "items": {"type": "integer", "minimum": 2}},
            },
        });
        assert_eq!(validate(&schema, &json!({"qty": "1"})).unwrap(), vec![]);
        let problems = validate(&schema, &json!({"qty": 5, "levels": [3, 1]})).unwrap();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["levels.1", "qty"]);
        let problems = validate(&schema, &json!({"x": 1})).unwrap();
        assert!(problems.iter().all(|p| p.path.is_empty()), "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(dotted("/a~1b/c~0"), "a/b.c~");
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused() {
        assert!(check_schema(&json!({"type": "object"})).is_ok());
        assert!(check_schema(&json!({"type": "objekt"})).is_err());
        assert!(check_schema(&json!({"minimum": "five"})).is_err());
    }
}
