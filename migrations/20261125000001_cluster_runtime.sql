-- What running real clusters needs on top of the foundation: each cluster's PKI and Swarm join tokens
-- (secrets sealed with the master key), the local provider's per-cluster network, per-node provider
-- state, and the lease that keeps one reconciler per cluster across all Berth processes.

CREATE TABLE cluster_secrets (
    cluster_id          uuid PRIMARY KEY REFERENCES clusters (id) ON DELETE CASCADE,
    -- The per-cluster CA that signs every engine's server certificate and Berth's client certificate.
    -- For an adopted (`existing`) cluster: the user's CA and client certificate, and no CA key.
    ca_cert_pem         text NOT NULL,
    ca_key_sealed       bytea,
    client_cert_pem     text NOT NULL,
    client_key_sealed   bytea NOT NULL,
    manager_token_sealed bytea,
    worker_token_sealed  bytea,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- The local provider gives each cluster its own bridge and /24; `local_network` numbers it (unique, so
-- two clusters never share addresses).
ALTER TABLE clusters
    ADD COLUMN local_network integer UNIQUE CHECK (local_network BETWEEN 0 AND 255),
    ADD COLUMN reconciler_owner text,
    ADD COLUMN reconciler_lease_until timestamptz,
    ADD COLUMN observed_at timestamptz;

-- Provider-specific facts about a node (its namespace, address, directories), written by the provider.
ALTER TABLE nodes ADD COLUMN provider_state jsonb NOT NULL DEFAULT '{}'::jsonb;
