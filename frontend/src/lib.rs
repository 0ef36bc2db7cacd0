//! Berth's web console.
//!
//! The console is a Leptos client-side-rendered app that talks to the REST API through the types in
//! `berth-types`, so it never re-declares a DTO. It arrives with its own issue; until then this crate only
//! pins that dependency direction so the workspace layout does not change later.

/// The API version the console is written against.
pub const API_PREFIX: &str = "/api/v1";
