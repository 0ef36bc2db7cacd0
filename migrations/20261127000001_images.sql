-- Images: the built-in registry's keys, the tags each tenant has in it, retention, clusters' pull
-- credentials, external registries' CAs, and the image storage quota.
--
-- Network 0 (10.213.0.0/24) is kept for the platform's own addresses on the host (the built-in
-- registry listens on 10.213.0.1 by default), so local clusters now take networks 1..255 (see
-- clusters/lifecycle.rs); nothing in the schema changes for that.

-- Keys that belong to the platform rather than to a tenant: the registry's certificate authority and the
-- key that signs registry tokens. Every Berth process (API, worker, registry role) reads the same ones;
-- the private keys are sealed with the master key, like the clusters' keys. The first process to need a
-- key creates it (`INSERT ... ON CONFLICT DO NOTHING`, then read back), so concurrent starts agree.
CREATE TABLE platform_keys (
    name        text PRIMARY KEY,
    cert_pem    text NOT NULL,
    key_sealed  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The old `images` table only held names a user had typed in; nothing pointed at it. Images now live in
-- the built-in registry, and what Berth knows of them is kept below, from the registry's notifications.
DROP TABLE images;

-- One row per tag in a tenant's namespace of the built-in registry (`<address>/<slug>/<repository>:<tag>`).
-- Kept current from the registry's push/delete notifications, from imports, and by a periodic catalog
-- pass. `size_bytes` is the image's config plus its layers, as the manifest states them.
CREATE TABLE image_tags (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    repository  text NOT NULL,
    tag         text NOT NULL,
    digest      text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    pushed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, repository, tag)
);
CREATE INDEX image_tags_digest_idx ON image_tags (tenant_id, repository, digest);

ALTER TABLE image_tags ENABLE ROW LEVEL SECURITY;
ALTER TABLE image_tags FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON image_tags
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

-- Image storage per tenant, in MiB (NULL: unlimited). Once a tenant's stored bytes reach it, the token
-- endpoint refuses push access.
ALTER TABLE quotas ADD COLUMN max_image_storage_mb bigint CHECK (max_image_storage_mb >= 0);


-- Retention per repository: keep the newest `keep_last` tags, and/or the tags pushed in the last
-- `keep_days` days; a tag either rule keeps stays. A policy may be set before the first push.
CREATE TABLE image_retention (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    repository  text NOT NULL,
    keep_last   integer CHECK (keep_last >= 1),
    keep_days   integer CHECK (keep_days >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, repository),
    CHECK (keep_last IS NOT NULL OR keep_days IS NOT NULL)
);

ALTER TABLE image_retention ENABLE ROW LEVEL SECURITY;
ALTER TABLE image_retention FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON image_retention
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

-- A private CA (PEM) an external registry's TLS certificate comes from, when it is not a public one.
ALTER TABLE registries ADD COLUMN ca_pem text;

-- Each cluster's own pull-only credential for its tenant's namespace of the built-in registry, handed
-- to the engine as registry auth when Berth deploys (what `--with-registry-auth` does). The secret is
-- kept sealed (to hand out) and as its SHA-256 (to check); rotating replaces both.
CREATE TABLE registry_robots (
    cluster_id     uuid PRIMARY KEY REFERENCES clusters (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    secret_hash    bytea NOT NULL UNIQUE,
    secret_sealed  bytea NOT NULL,
    rotated_at     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE registry_robots ENABLE ROW LEVEL SECURITY;
ALTER TABLE registry_robots FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON registry_robots
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

-- Slugs of deleted tenants are never given out again: a slug names a namespace in the registry (and,
-- later, hostnames), and whatever might still sit under it — a push with a token issued just before the
-- deletion, a namespace another process has not emptied yet — must never become a new tenant's.
CREATE TABLE retired_slugs (
    slug        text PRIMARY KEY,
    retired_at  timestamptz NOT NULL DEFAULT now()
);
