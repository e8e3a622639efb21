//! Credentials loaded at start and loaded again after a provider rejects them, so a
//! rotated secret file takes effect without a restart.

use std::sync::{PoisonError, RwLock};

use crate::config::ConfigError;

type Loader<T> = Box<dyn Fn() -> Result<T, ConfigError> + Send + Sync>;

/// A credential value and the function that reads it from the configuration.
pub(super) struct Reloadable<T> {
    /// The section path, such as `providers.mailgun`, for the reload failure log.
    key: String,
    current: RwLock<T>,
    load: Loader<T>,
}

impl<T: Clone> Reloadable<T> {
    /// Loads the value once, so a missing or unreadable secret fails at start.
    pub(super) fn new(
        key: &str,
        load: impl Fn() -> Result<T, ConfigError> + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        let current = load()?;
        Ok(Reloadable {
            key: key.to_owned(),
            current: RwLock::new(current),
            load: Box::new(load),
        })
    }

    pub(super) fn get(&self) -> T {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads the value again. An inline secret reads back unchanged, and a failed read
    /// keeps the current value.
    pub(super) fn reload(&self) {
        match (self.load)() {
            Ok(value) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = value;
            }
            Err(error) => {
                tracing::warn!(
                    provider = %self.key,
                    error = %error,
                    "failed to reload provider credentials; keeping the current ones"
                );
            }
        }
    }
}
