//! js templates (see [`super::Template`]).

use super::Template;

pub(super) const TEMPLATES: &[Template] = &[];
