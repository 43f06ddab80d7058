//! `kind = "none"`: a public route. Admits every request with an empty subject; the
//! pipeline still strips any client-sent identity headers.

use std::sync::{Arc, LazyLock};

use super::{AuthMethod, Identity, Outcome, RequestView};

/// The public authenticator.
pub struct NoneAuth;

impl NoneAuth {
    /// Always admits.
    pub fn authenticate(&self, _req: &RequestView<'_>) -> Outcome {
        static ANYONE: LazyLock<Arc<Identity>> =
            LazyLock::new(|| Arc::new(Identity::new(AuthMethod::None, "")));
        Outcome::Admit(ANYONE.clone())
    }
}

/// `[authenticators.NAME]` of kind `none`: nothing besides `kind`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Always `"none"`.
    pub kind: String,
}
