-- The routers at work and how far each has followed the route table: `applied_at` is the database
-- time at which a router began reading the newest table it now serves (routes, certificates, ACME
-- challenges). A job that must know its change is served (an HTTP-01 challenge, before the authority
-- checks it) waits until every router seen lately has applied a table read after the change. Each
-- router writes its row after every resync (two seconds) while it lives.
CREATE TABLE routers (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);

-- Platform-internal: only Berth's own jobs and routers (which bypass row-level security) read it.
ALTER TABLE routers ENABLE ROW LEVEL SECURITY;
ALTER TABLE routers FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON routers USING ((SELECT berth_rls_bypassed())) WITH CHECK ((SELECT berth_rls_bypassed()));
