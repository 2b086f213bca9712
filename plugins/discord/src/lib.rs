//! kata channel plugin for Discord (work in progress).
