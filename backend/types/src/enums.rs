//! Closed sets of values. Each is stored in Postgres as the same lowercase text it has in JSON, and the
//! database's CHECK constraints list the same values.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares a string enum with its wire/database spelling, `as_str` and `FromStr`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        // The wire spelling is the variant's name in snake_case, written here (not per variant) because
        // utoipa cannot read a `rename` whose value comes from a macro argument, and would then document
        // `"Owner"` while serde sends `"owner"`. The test below holds `$text` and serde together.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// What a principal may do. Tenant roles are ordered: viewer < developer < admin < owner.
    /// `platform_admin` belongs to no tenant and manages tenants.
    Role {
        PlatformAdmin => "platform_admin",
        Owner => "owner",
        Admin => "admin",
        Developer => "developer",
        Viewer => "viewer",
    }
}

impl Role {
    /// Rank among tenant roles; `None` for the platform admin, who is outside every tenant.
    pub fn tenant_rank(self) -> Option<u8> {
        match self {
            Role::PlatformAdmin => None,
            Role::Viewer => Some(0),
            Role::Developer => Some(1),
            Role::Admin => Some(2),
            Role::Owner => Some(3),
        }
    }

    /// Whether this role has at least the powers of `other` (both tenant roles), or both are platform admin.
    pub fn at_least(self, other: Role) -> bool {
        match (self.tenant_rank(), other.tenant_rank()) {
            (Some(a), Some(b)) => a >= b,
            (None, None) => true,
            _ => false,
        }
    }
}

string_enum! {
    TenantStatus { Active => "active", Suspended => "suspended" }
}

string_enum! {
    /// A router's condition. `serving`: seen in the last ten seconds, serving the newest route table
    /// it read. `failing`: seen lately, but keeping an older table because the newest could not be
    /// applied (`error` says why). `stopped`: stopped because it was asked to (SIGTERM, Berth shutting
    /// down), until it reports again. `gone`: not seen for ten seconds (it reports every two) and not
    /// stopped that way.
    RouterState { Serving => "serving", Failing => "failing", Stopped => "stopped", Gone => "gone" }
}

string_enum! {
    /// Where a cluster's nodes come from.
    #[derive(Default)]
    Provider {
        /// Each node is a network namespace with its own dockerd on the Berth host.
        #[default]
        Local => "local",
        /// A Swarm the user already runs; Berth adopts it.
        Existing => "existing",
    }
}

string_enum! {
    ClusterStatus {
        Provisioning => "provisioning",
        Ready => "ready",
        Degraded => "degraded",
        Failed => "failed",
        Deleting => "deleting",
    }
}

string_enum! {
    NodeRole { Manager => "manager", Worker => "worker" }
}

string_enum! {
    /// Swarm node availability.
    Availability { Active => "active", Pause => "pause", Drain => "drain" }
}

string_enum! {
    NodeState {
        Pending => "pending",
        Ready => "ready",
        Down => "down",
        Unknown => "unknown",
        Removing => "removing",
    }
}

string_enum! {
    ApplicationStatus {
        Deploying => "deploying",
        Running => "running",
        Updating => "updating",
        Degraded => "degraded",
        Failed => "failed",
        Deleting => "deleting",
    }
}

string_enum! {
    ServiceStatus {
        Pending => "pending",
        Running => "running",
        Updating => "updating",
        Degraded => "degraded",
        Failed => "failed",
        Removing => "removing",
    }
}

string_enum! {
    /// How a tenant came to hold a custom domain: a platform admin's grant, or the TXT record the
    /// tenant published in the domain's DNS.
    DomainProof { Admin => "admin", Dns => "dns" }
}

string_enum! {
    /// `verified`: the tenant's routes under the domain are routed; `pending`: waiting for its proof.
    DomainStatus { Verified => "verified", Pending => "pending" }
}

string_enum! {
    /// How a release shares traffic: `canary` at any weight, `blue_green` all or nothing (0 or 100).
    ReleaseStrategy {
        Canary => "canary",
        BlueGreen => "blue_green",
    }
}

string_enum! {
    ReleaseState {
        Starting => "starting",
        Running => "running",
        Promoting => "promoting",
        Promoted => "promoted",
        Aborting => "aborting",
        Aborted => "aborted",
        Failed => "failed",
    }
}

string_enum! {
    JobState {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    /// The spelling in `as_str` (the database's), serde's (the wire's) and the OpenAPI schema's agree.
    fn check<T: Serialize + PartialSchema + Copy + std::fmt::Display>(all: &[T]) {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let documented: Vec<String> = schema["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        let wire: Vec<String> = all.iter().map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_owned()).collect();
        let text: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(wire, text);
        assert_eq!(documented, text);
    }

    #[test]
    fn wire_database_and_schema_spellings_agree() {
        check(Role::ALL);
        check(TenantStatus::ALL);
        check(RouterState::ALL);
        check(Provider::ALL);
        check(ClusterStatus::ALL);
        check(NodeRole::ALL);
        check(Availability::ALL);
        check(NodeState::ALL);
        check(ApplicationStatus::ALL);
        check(ServiceStatus::ALL);
        check(JobState::ALL);
        check(ReleaseStrategy::ALL);
        check(ReleaseState::ALL);
    }
}
