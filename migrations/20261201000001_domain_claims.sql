-- Custom domains a tenant proves itself: it claims the domain, publishes the claim's token as a TXT
-- record `_berth-challenge.<domain>`, and Berth looks it up. Several tenants may claim one domain; the
-- one whose record is found gets it (a grant with `proved_by = 'dns'`), and the claim is removed.
ALTER TABLE domain_grants ADD COLUMN proved_by text NOT NULL DEFAULT 'admin' CHECK (proved_by IN ('admin', 'dns'));

CREATE TABLE domain_claims (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    domain     text NOT NULL CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    -- Published in DNS, so not a secret; unguessable so that no one else's record can match it.
    token      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    checked_at timestamptz,
    last_error text,
    PRIMARY KEY (tenant_id, domain)
);
ALTER TABLE domain_claims ENABLE ROW LEVEL SECURITY;
ALTER TABLE domain_claims FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON domain_claims
    USING ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()))
    WITH CHECK ((SELECT berth_rls_bypassed()) OR tenant_id = (SELECT berth_current_tenant()));
