//! Custom domains: which tenant holds which domain (and every name under it), so that its routes
//! there are routed and no other tenant can route a name under it. One home for the capability:
//! - `proof` — the TXT record a tenant publishes to prove a domain, and looking it up;
//! - `store` — grants and claims, and the rule that a domain is one tenant's;
//! - `verify` — checking a claim (asked for, or in the background for recent claims);
//! - `api` — `/domains` (a tenant's claims and proofs) and `/admin/tenants/{id}/domains` (grants).

pub mod api;
pub mod proof;
pub mod store;
pub mod verify;
