-- Load balancers (the second routing scheme, after per-service domains): a tenant's balancer on a
-- cluster has listeners — a port and a protocol on the balancer's address — each forwarding to one
-- target port of a service. Berth keeps each listener's backends in step with the service's running
-- tasks. The `local` driver is served by the routers: each listener is an HAProxy frontend on the
-- router's address.
CREATE TABLE load_balancers (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    cluster_id  uuid NOT NULL,
    name        text NOT NULL,
    driver      text NOT NULL DEFAULT 'local' CHECK (driver IN ('local')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, cluster_id) REFERENCES clusters (tenant_id, id) ON DELETE CASCADE,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id)
);
ALTER TABLE load_balancers ENABLE ROW LEVEL SECURITY;
ALTER TABLE load_balancers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON load_balancers
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

CREATE TABLE load_balancer_listeners (
    load_balancer_id uuid NOT NULL,
    tenant_id        uuid NOT NULL,
    -- A port is one listener's on the routers, across all tenants.
    port             integer NOT NULL UNIQUE CHECK (port BETWEEN 1 AND 65535),
    protocol         text NOT NULL CHECK (protocol IN ('tcp', 'http')),
    service_id       uuid NOT NULL,
    target_port      integer NOT NULL CHECK (target_port BETWEEN 1 AND 65535),
    PRIMARY KEY (load_balancer_id, port),
    FOREIGN KEY (tenant_id, load_balancer_id) REFERENCES load_balancers (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, service_id) REFERENCES services (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX load_balancer_listeners_service_idx ON load_balancer_listeners (service_id);
ALTER TABLE load_balancer_listeners ENABLE ROW LEVEL SECURITY;
ALTER TABLE load_balancer_listeners FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON load_balancer_listeners
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));

CREATE TRIGGER load_balancer_listeners_routes_changed AFTER INSERT OR UPDATE OR DELETE ON load_balancer_listeners
    FOR EACH ROW EXECUTE FUNCTION berth_routes_changed();
