//! How one setting of the typed table is described and read: its name,
//! default, accepted values and meaning ([`Setting`]), and what `--help`,
//! the start-up log and the README check need of it whatever its type
//! ([`Described`]).
//!
//! The table itself, and what each setting means, is `config.rs`; nothing
//! here names a variable.

use super::{Config, ConfigError};

/// One environment variable the broker reads, whose value is a `T`.
pub struct Setting<T: 'static> {
    pub name: &'static str,
    /// What the setting is when its variable is unset or empty.
    pub default: Fallback<T>,
    pub values: Values<T>,
    /// What it does, for `--help` and the README (which add the range).
    pub meaning: &'static str,
    /// Its value in a config, as the start-up log shows it.
    pub shown: fn(&Config) -> String,
}

/// A setting's default.
pub enum Fallback<T> {
    /// This text, read as if the variable said it.
    Text(&'static str),
    /// Worked out at start-up; `--help` and the README say `shown`.
    Computed {
        shown: &'static str,
        value: fn() -> T,
    },
}

/// The values a setting accepts, and how its text becomes a `T`.
pub enum Values<T: 'static> {
    /// A whole number from `min` to `max`, turned into a `T` by `into`.
    Whole {
        min: u64,
        max: u64,
        into: fn(u64) -> T,
    },
    /// One of these words, in any case.
    OneOf(&'static [(&'static str, T)]),
    /// What `parse` accepts (the text is trimmed); its error says why not.
    Parsed(fn(&str) -> Result<T, String>),
    /// Any text, kept as it is, spaces included (a secret).
    Verbatim(fn(String) -> T),
}

impl<T: Clone> Values<T> {
    fn parse(&self, text: &str) -> Result<T, String> {
        match self {
            Values::Whole { min, max, into } => {
                let n: u64 = text
                    .trim()
                    .parse()
                    .map_err(|_| "not a whole number".to_string())?;
                if n < *min || n > *max {
                    return Err(format!("must be between {min} and {max}"));
                }
                Ok(into(n))
            }
            Values::OneOf(choices) => choices
                .iter()
                .find(|(word, _)| word.eq_ignore_ascii_case(text.trim()))
                .map(|(_, value)| value.clone())
                .ok_or_else(|| {
                    let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
                    format!("must be one of {}", words.join(", "))
                }),
            Values::Parsed(parse) => parse(text.trim()),
            Values::Verbatim(keep) => Ok(keep(text.to_string())),
        }
    }

    /// True if `text` means "unset": empty, or for anything but a verbatim
    /// value, only spaces.
    fn is_unset(&self, text: &str) -> bool {
        match self {
            Values::Verbatim(_) => text.is_empty(),
            _ => text.trim().is_empty(),
        }
    }
}

impl<T: Clone> Setting<T> {
    /// The setting's value from `lookup`, or its default.
    pub fn read(&self, lookup: &impl Fn(&str) -> Option<String>) -> Result<T, ConfigError> {
        let text = match self.given(lookup) {
            Some(text) => text,
            None => match &self.default {
                Fallback::Text(text) => text.to_string(),
                Fallback::Computed { value, .. } => return Ok(value()),
            },
        };
        self.values.parse(&text).map_err(|reason| ConfigError {
            variable: self.name,
            value: text,
            reason,
        })
    }

    /// The variable's text, unless it is unset (or empty).
    pub fn given(&self, lookup: &impl Fn(&str) -> Option<String>) -> Option<String> {
        lookup(self.name).filter(|text| !self.values.is_unset(text))
    }
}

/// What `--help`, the start-up log and the README check need of a setting,
/// whatever the type of its value.
pub trait Described {
    fn name(&self) -> &'static str;
    /// The default as the README writes it; empty for none.
    fn default_text(&self) -> &'static str;
    /// The meaning, with the range of a number: "... (1 to 1000000)".
    fn meaning(&self) -> String;
    /// The value in `config`, as the start-up log shows it.
    fn shown(&self, config: &Config) -> String;
}

impl<T> Described for Setting<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default_text(&self) -> &'static str {
        match self.default {
            Fallback::Text(text) | Fallback::Computed { shown: text, .. } => text,
        }
    }

    fn meaning(&self) -> String {
        match self.values {
            Values::Whole { min, max, .. } => format!("{} ({min} to {max})", self.meaning),
            _ => self.meaning.to_string(),
        }
    }

    fn shown(&self, config: &Config) -> String {
        (self.shown)(config)
    }
}
