//! Access tokens: short-lived HS256 JWTs signed with a key derived from the master secret.

use std::time::{SystemTime, UNIX_EPOCH};

use berth_types::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The user's tenant; absent for platform admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<Uuid>,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    /// Audience: only access tokens of this Berth are accepted as access tokens.
    pub aud: String,
}

const AUDIENCE: &str = "berth-api";

pub fn issue(key: &[u8], user: Uuid, tenant: Option<Uuid>, role: Role, ttl_secs: u64) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims { sub: user, tid: tenant, role, iat: now, exp: now + ttl_secs, aud: AUDIENCE.to_owned() };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key))?)
}

/// Verifies signature, algorithm (only HS256: no `none`, no key confusion), expiry and audience.
pub fn verify(key: &[u8], token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    Ok(jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &validation)?.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let key = b"0123456789abcdef0123456789abcdef";
        let user = Uuid::now_v7();
        let t = issue(key, user, None, Role::PlatformAdmin, 60).unwrap();
        assert_eq!(verify(key, &t).unwrap().sub, user);
        assert!(verify(b"another key entirely, 32 bytes!!", &t).is_err());
        let expired = {
            let claims = Claims { sub: user, tid: None, role: Role::Viewer, iat: 1, exp: 2, aud: AUDIENCE.into() };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key)).unwrap()
        };
        assert!(verify(key, &expired).is_err());
    }
}
