-- Row-level security: a second wall behind the application's tenant scoping.
--
-- Every table that holds a tenant's rows gets a policy that shows (and lets one write) only the rows of
-- the tenant named by the connection setting `berth.tenant_id`, unless the setting `berth.rls_bypass` is
-- `on`. Berth has two pools (see db.rs): the tenant pool, whose connections are scoped to the
-- caller's tenant each time a request takes one (and see nothing when no tenant is set), and the
-- system pool, whose connections carry `berth.rls_bypass = on` and which only the paths that work
-- across tenants use: authentication, platform administration, audit, jobs, reconcilers.
--
-- Superusers ignore row-level security, so the tenant pool switches to the role `berth_tenant` when
-- Berth connects as one (the embedded database); a non-superuser owner of the tables is held to the
-- policies by FORCE. Roles belong to the whole PostgreSQL cluster, so creating it tolerates another
-- database of the same cluster having created it first.
DO $$
BEGIN
    IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user)
       AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'berth_tenant') THEN
        CREATE ROLE berth_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'berth_tenant') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA public TO berth_tenant';
        EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO berth_tenant';
        EXECUTE 'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO berth_tenant';
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO berth_tenant';
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO berth_tenant';
    END IF;
END
$$;

-- The caller's tenant, or NULL (no rows) when none is set. Policies call these inside scalar subqueries,
-- which PostgreSQL evaluates once per query (an InitPlan) instead of once per row: measured, the
-- difference between row-level security costing about 40% of a 100-row page and costing little.
CREATE FUNCTION berth_current_tenant() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('berth.tenant_id', true), '')::uuid
$$;

CREATE FUNCTION berth_rls_bypassed() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('berth.rls_bypass', true), '') = 'on'
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['quotas', 'users', 'api_tokens', 'clusters', 'nodes', 'templates', 'template_versions',
                             'registries', 'images', 'applications', 'application_revisions', 'services', 'containers',
                             'jobs', 'events', 'audit_log']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON %I
                          USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
                          WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))', t);
    END LOOP;
END
$$;

-- A tenant sees its own tenant row.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY own_tenant ON tenants
    USING ((SELECT berth_rls_bypassed()) OR id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR id = (SELECT berth_current_tenant()));

