-- How a release's copies fare in each router's health checks, sampled every few seconds: how many of
-- a route's copy servers were up and how many down. A release whose copies stay down for its
-- auto-abort window gets no requests (the other side takes them all), so its error rate never shows
-- anything; their health does.
CREATE TABLE release_health (
    release_id uuid NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    router     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    up         integer NOT NULL,
    down       integer NOT NULL
);
CREATE INDEX release_health_idx ON release_health (release_id, at);
ALTER TABLE release_health ENABLE ROW LEVEL SECURITY;
ALTER TABLE release_health FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON release_health
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));
