-- Routing: which requests reach which service. A route sends requests for a domain (and a path prefix)
-- to one target port of a service; the router (HAProxy, driven by Berth) balances them over the
-- service's running tasks at the host-mode port each task got on its node.
--
-- Routes come from three places: every service with a port gets a `default` route at
-- `<service>.<application>.<tenant slug>.<apps domain>`; the Compose file declares more (`compose`:
-- `berth.routing.port_<N>` labels, the `x-berth` extension); integrators add them through the API (`api`).
-- A revision rewrites its `default` and `compose` routes; `api` routes live until deleted.
CREATE TABLE routes (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    service_id     uuid NOT NULL,
    -- The service's target (container) port.
    port           integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    domain         text NOT NULL CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    path_prefix    text NOT NULL DEFAULT '/' CHECK (left(path_prefix, 1) = '/'),
    source         text NOT NULL CHECK (source IN ('default', 'compose', 'api')),
    -- Routed only once true: default domains are, a custom domain once its tenant has proved it owns it
    -- (or a platform admin has granted it).
    verified       boolean NOT NULL DEFAULT false,
    balance        text NOT NULL DEFAULT 'roundrobin' CHECK (balance IN ('roundrobin', 'leastconn', 'source', 'random')),
    -- Session stickiness through a cookie the router sets.
    sticky         boolean NOT NULL DEFAULT false,
    -- How long the router waits for the service's answer.
    timeout_secs   integer NOT NULL DEFAULT 60 CHECK (timeout_secs BETWEEN 1 AND 3600),
    -- Largest request body passed on (NULL: no limit).
    max_body_bytes bigint CHECK (max_body_bytes > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, service_id) REFERENCES services (tenant_id, id) ON DELETE CASCADE,
    UNIQUE (tenant_id, id)
);
-- A domain and path belong to one route across all tenants: no tenant can take another's.
CREATE UNIQUE INDEX routes_domain_path ON routes (domain, path_prefix);
CREATE INDEX routes_service_idx ON routes (service_id);

ALTER TABLE routes ENABLE ROW LEVEL SECURITY;
ALTER TABLE routes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON routes
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

-- Routers follow the route table: any change to routes, to tasks (state, node, host ports) or to node
-- addresses is announced on `berth_routes`, and every router reads the table again. Row triggers, so
-- the observer's passes that change nothing announce nothing; PostgreSQL folds identical
-- notifications of one transaction into one.
CREATE FUNCTION berth_routes_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_routes', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER routes_changed AFTER INSERT OR UPDATE OR DELETE ON routes
    FOR EACH ROW EXECUTE FUNCTION berth_routes_changed();
CREATE TRIGGER containers_routes_changed AFTER INSERT OR DELETE ON containers
    FOR EACH ROW EXECUTE FUNCTION berth_routes_changed();
CREATE TRIGGER containers_routes_updated AFTER UPDATE ON containers
    FOR EACH ROW WHEN ((OLD.state, OLD.desired_state, OLD.node_id, OLD.host_ports)
                       IS DISTINCT FROM (NEW.state, NEW.desired_state, NEW.node_id, NEW.host_ports))
    EXECUTE FUNCTION berth_routes_changed();
CREATE TRIGGER nodes_routes_changed AFTER UPDATE ON nodes
    FOR EACH ROW WHEN (OLD.address IS DISTINCT FROM NEW.address) EXECUTE FUNCTION berth_routes_changed();

-- The TCP target ports a service's Compose file exposes (`ports` targets and labelled ports): each gets
-- a host-mode port on every task, and any of them may be routed.
ALTER TABLE services ADD COLUMN exposed_ports integer[] NOT NULL DEFAULT '{}';

-- Custom domains a platform admin has granted a tenant: the domain and every name under it. A route to
-- a custom domain is routed only once a grant covers it. One tenant per domain.
CREATE TABLE domain_grants (
    domain     text PRIMARY KEY CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domain_grants_tenant_idx ON domain_grants (tenant_id);
ALTER TABLE domain_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE domain_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON domain_grants
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

-- Whether another tenant holds a grant covering `d`: routes there are refused, so no tenant can squat
-- on a name under another's domain. Grants are row-level protected, so the check runs as the
-- function's owner with the bypass set for its duration, and answers only yes or no.
CREATE FUNCTION berth_domain_held_by_other(d text, tenant uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET berth.rls_bypass = 'on' SET search_path = public AS $$
    SELECT EXISTS (SELECT 1 FROM domain_grants g
                    WHERE g.tenant_id <> tenant AND (d = g.domain OR right(d, length(g.domain) + 1) = '.' || g.domain))
$$;

-- Traffic each router has seen per route, written by the routers every few seconds from HAProxy's
-- statistics. Totals count from the row's first write (HAProxy's own start again at zero on each
-- reload; the router adds what is new). Rates and the response time are the router's last interval.
CREATE TABLE route_traffic (
    route_id           uuid NOT NULL REFERENCES routes (id) ON DELETE CASCADE,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- `<host name>@<listen address>` of the router.
    router             text NOT NULL,
    requests           bigint NOT NULL DEFAULT 0,
    responses_5xx      bigint NOT NULL DEFAULT 0,
    -- Connections to tasks that failed (each retried on another task when it could be).
    failed_connections bigint NOT NULL DEFAULT 0,
    requests_per_sec   double precision NOT NULL DEFAULT 0,
    errors_per_sec     double precision NOT NULL DEFAULT 0,
    -- HAProxy's average response time over the route's last 1024 requests, in milliseconds.
    response_ms        integer NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route_id, router)
);
ALTER TABLE route_traffic ENABLE ROW LEVEL SECURITY;
ALTER TABLE route_traffic FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON route_traffic
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));
