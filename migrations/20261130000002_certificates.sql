-- TLS: certificates the routers serve (chosen by SNI), uploaded by a tenant or obtained from an ACME
-- certificate authority by Berth (HTTP-01, answered by the routers). Private keys are sealed with the
-- master secret's at-rest key. One certificate per name across all tenants.
CREATE TABLE certificates (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The name it is for; `*.example.com` (uploaded only) covers the names one level below.
    domain           text NOT NULL UNIQUE CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    source           text NOT NULL CHECK (source IN ('uploaded', 'acme')),
    -- pending: being obtained; issued: served; failed: the last attempt failed (message says why; an
    -- issued certificate whose renewal failed stays issued, and served, until it expires).
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'issued', 'failed')),
    certificate_pem  text NOT NULL DEFAULT '',
    key_sealed       bytea,
    not_before       timestamptz,
    not_after        timestamptz,
    -- Serial number of the served certificate, hex.
    serial           text NOT NULL DEFAULT '',
    message          text NOT NULL DEFAULT '',
    -- When Berth last asked the authority, and whether a renewal was asked for.
    renewed_at       timestamptz,
    renew_requested  boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);
CREATE INDEX certificates_tenant_idx ON certificates (tenant_id);
ALTER TABLE certificates ENABLE ROW LEVEL SECURITY;
ALTER TABLE certificates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON certificates
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

-- HTTP-01 challenges in progress: the routers answer `/.well-known/acme-challenge/<token>` with the key
-- authorization, for any host. Written and removed by the job obtaining the certificate.
CREATE TABLE acme_challenges (
    token             text PRIMARY KEY,
    key_authorization text NOT NULL,
    certificate_id    uuid NOT NULL REFERENCES certificates (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- The ACME account Berth uses with each directory (its credentials sealed).
CREATE TABLE acme_accounts (
    directory_url      text PRIMARY KEY,
    credentials_sealed bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- Plain-HTTP requests to a route may be redirected to HTTPS (once the router has its certificate).
ALTER TABLE routes ADD COLUMN https_redirect boolean NOT NULL DEFAULT false;

-- Routers follow certificates (issued, renewed, removed) and challenges like routes.
CREATE TRIGGER certificates_routes_changed AFTER INSERT OR UPDATE OF state, certificate_pem OR DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION berth_routes_changed();
CREATE TRIGGER acme_challenges_routes_changed AFTER INSERT OR UPDATE OR DELETE ON acme_challenges
    FOR EACH ROW EXECUTE FUNCTION berth_routes_changed();

-- Platform-internal: only Berth's own jobs and routers (which bypass row-level security) read these.
ALTER TABLE acme_challenges ENABLE ROW LEVEL SECURITY;
ALTER TABLE acme_challenges FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON acme_challenges USING ((SELECT berth_rls_bypassed())) WITH CHECK ((SELECT berth_rls_bypassed()));
ALTER TABLE acme_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE acme_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON acme_accounts USING ((SELECT berth_rls_bypassed())) WITH CHECK ((SELECT berth_rls_bypassed()));

-- A route's health check: an HTTP GET of this path (2xx or 3xx is healthy) instead of a TCP connect.
ALTER TABLE routes ADD COLUMN probe_path text CHECK (probe_path ~ '^/[!-~]{0,199}$');
