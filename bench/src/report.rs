//! The JSON every mode returns, for `--json`.

use serde_json::{Value, json};

/// The JSON object of a mode's run: its name, its parameters and its results.
pub fn of(mode: &str, parameters: &impl serde::Serialize, results: Value) -> anyhow::Result<Value> {
    Ok(json!({
        "mode": mode,
        "parameters": serde_json::to_value(parameters)?,
        "results": results,
    }))
}
