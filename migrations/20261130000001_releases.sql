-- Releases: a canary or blue/green release runs the services a new revision changes beside the ones
-- that serve now ("copies", in a stack of their own on the engine, `<application>_r<revision>`), and the
-- router splits each route's requests between the two by weight. Promote makes the new revision the
-- application's own (its services updated in place, then the copies removed); abort removes the copies.
CREATE TABLE releases (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    application_id  uuid NOT NULL,
    -- The revision serving when the release began, and the one being released.
    from_revision   integer NOT NULL,
    to_revision     integer NOT NULL,
    strategy        text NOT NULL CHECK (strategy IN ('canary', 'blue_green')),
    -- Percent of each route's requests the copies get.
    weight          integer NOT NULL CHECK (weight BETWEEN 0 AND 100),
    -- starting → running → promoting → promoted, or → aborting → aborted; failed: the copies could not
    -- be started (abort removes what was made).
    state           text NOT NULL DEFAULT 'starting'
                    CHECK (state IN ('starting', 'running', 'promoting', 'promoted', 'aborting', 'aborted', 'failed')),
    -- {max_error_rate, window_secs, min_requests}: abort on its own when the copies fail more than this.
    auto_abort      jsonb,
    message         text NOT NULL DEFAULT '',
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- When the release was promoted or aborted; an application has one unfinished release at most.
    finished_at     timestamptz,
    FOREIGN KEY (tenant_id, application_id) REFERENCES applications (tenant_id, id) ON DELETE CASCADE,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX releases_one_open ON releases (application_id) WHERE finished_at IS NULL;
CREATE INDEX releases_application_idx ON releases (application_id, created_at);
ALTER TABLE releases ENABLE ROW LEVEL SECURITY;
ALTER TABLE releases FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON releases
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

-- A release's copy of a service is a service row of its own (its tasks are observed like any other),
-- tied to the release and to the engine stack it runs in. The application's own services have neither.
ALTER TABLE services ADD COLUMN release_id uuid;
ALTER TABLE services ADD COLUMN stack text;
ALTER TABLE services ADD CONSTRAINT services_release_fk
    FOREIGN KEY (tenant_id, release_id) REFERENCES releases (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE services ADD CONSTRAINT services_copy_has_stack CHECK ((release_id IS NULL) = (stack IS NULL));
ALTER TABLE services DROP CONSTRAINT services_application_id_name_key;
CREATE UNIQUE INDEX services_own_name ON services (application_id, name) WHERE release_id IS NULL;
CREATE UNIQUE INDEX services_copy_name ON services (release_id, name) WHERE release_id IS NOT NULL;

-- Routers split traffic by the release's weight: a change of it (or of the release's state) is a
-- change of the route table.
CREATE TRIGGER releases_routes_changed AFTER INSERT OR UPDATE OF weight, state OR DELETE ON releases
    FOR EACH ROW EXECUTE FUNCTION berth_routes_changed();

-- What each router saw the copies answer, one row per router and reading (every few seconds while
-- they get requests): automatic abort sums the rows of its window.
CREATE TABLE release_traffic (
    release_id     uuid NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    router         text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    requests       bigint NOT NULL,
    responses_5xx  bigint NOT NULL
);
CREATE INDEX release_traffic_idx ON release_traffic (release_id, at);
ALTER TABLE release_traffic ENABLE ROW LEVEL SECURITY;
ALTER TABLE release_traffic FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON release_traffic
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));
