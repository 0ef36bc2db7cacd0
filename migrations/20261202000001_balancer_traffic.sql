-- What the routers saw through each load balancer listener, one row per listener and router (the
-- same counters as route_traffic; for a `tcp` listener a request is a connection).
CREATE TABLE balancer_traffic (
    load_balancer_id   uuid NOT NULL,
    port               integer NOT NULL,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- `<host name>@<listen address>` of the router.
    router             text NOT NULL,
    requests           bigint NOT NULL DEFAULT 0,
    responses_5xx      bigint NOT NULL DEFAULT 0,
    failed_connections bigint NOT NULL DEFAULT 0,
    requests_per_sec   double precision NOT NULL DEFAULT 0,
    errors_per_sec     double precision NOT NULL DEFAULT 0,
    response_ms        integer NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (load_balancer_id, port, router),
    -- A listener removed (or its balancer) takes its traffic with it.
    FOREIGN KEY (load_balancer_id, port) REFERENCES load_balancer_listeners (load_balancer_id, port) ON DELETE CASCADE
);
ALTER TABLE balancer_traffic ENABLE ROW LEVEL SECURITY;
ALTER TABLE balancer_traffic FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON balancer_traffic
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));
