//! Reading a config, the same for every role: file → TOML text → raw struct →
//! compiled config.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// Parses `text` into the raw struct `R` and compiles it. A syntax error, unknown key
/// or value of the wrong TOML type is reported alone (with its line and column);
/// otherwise `compile` reports every invalid value with its key path.
pub(crate) fn parse<R: DeserializeOwned, C>(
    text: &str,
    compile: impl FnOnce(&R) -> Result<C, ConfigError>,
) -> Result<C, ConfigError> {
    let raw: R = toml::from_str(text).map_err(|error| ConfigError::from_toml(text, &error))?;
    compile(&raw)
}

/// Reads `path` and hands its text to `parse`. A file that cannot be read is one
/// problem whose path is the file's.
pub(crate) fn load<C>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<C, ConfigError>,
) -> Result<C, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::single(path.display().to_string(), format!("cannot read: {error}"))
    })?;
    parse(&text)
}
