//! Who is calling: passwords, access tokens (JWT), refresh tokens, API tokens, and the [`Principal`]
//! extractor that turns an `Authorization` header into a caller with a tenant and a role.

pub mod jwt;
pub mod password;
pub mod principal;
pub mod throttle;

pub use principal::{Actor, Principal};
