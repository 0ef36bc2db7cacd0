-- Applications on Swarm: a revision records everything a deploy needs (the Compose text and files as
-- they were, the variables, the images pinned to digests), so a rollback redeploys exactly that; the
-- reconciler writes what the engine reports about services and their tasks.

-- The admission policy a platform admin sets per tenant; '{}' means the safe defaults.
ALTER TABLE tenants ADD COLUMN admission_policy jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Files a template's Compose text names (`env_file`, secret and config `file:`), by relative path, and
-- the warnings the text drew. Variables become {name: {default, required}}.
ALTER TABLE template_versions ADD COLUMN files jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE template_versions ADD COLUMN warnings jsonb NOT NULL DEFAULT '[]'::jsonb;
UPDATE template_versions v
   SET variables = coalesce((SELECT jsonb_object_agg(key, jsonb_build_object('default', value, 'required', false))
                               FROM jsonb_each(v.variables)), '{}'::jsonb);

-- An application may come from inline Compose text instead of a template.
ALTER TABLE applications ALTER COLUMN template_id DROP NOT NULL;
UPDATE applications SET status = 'deploying' WHERE status = 'pending';
ALTER TABLE applications DROP CONSTRAINT applications_status_check;
ALTER TABLE applications ADD CONSTRAINT applications_status_check
    CHECK (status IN ('deploying', 'running', 'updating', 'degraded', 'failed', 'deleting'));
ALTER TABLE applications ALTER COLUMN status SET DEFAULT 'deploying';
-- The revision the deploy job last finished applying to the engine (NULL until the first one has).
ALTER TABLE applications ADD COLUMN deployed_revision integer;
-- Why the application is failed or degraded, in the engine's or the job's words.
ALTER TABLE applications ADD COLUMN message text NOT NULL DEFAULT '';

ALTER TABLE application_revisions ALTER COLUMN template_version DROP NOT NULL;
ALTER TABLE application_revisions ADD COLUMN template_id uuid;
ALTER TABLE application_revisions ADD COLUMN compose text NOT NULL DEFAULT '';
ALTER TABLE application_revisions ADD COLUMN files jsonb NOT NULL DEFAULT '{}'::jsonb;
-- Warnings the Compose file drew (keys Swarm ignores, unreachable ports, …): [{path, message, line, column}].
ALTER TABLE application_revisions ADD COLUMN warnings jsonb NOT NULL DEFAULT '[]'::jsonb;
-- service name → the image pinned to a digest when this revision was first deployed.
ALTER TABLE application_revisions ADD COLUMN images jsonb NOT NULL DEFAULT '{}'::jsonb;

UPDATE services SET status = 'updating' WHERE status = 'pending';
ALTER TABLE services DROP CONSTRAINT services_status_check;
ALTER TABLE services ADD CONSTRAINT services_status_check
    CHECK (status IN ('pending', 'running', 'updating', 'degraded', 'failed', 'removing'));
ALTER TABLE services ADD COLUMN mode text NOT NULL DEFAULT 'replicated' CHECK (mode IN ('replicated', 'global'));
-- Observed: running tasks, the image the engine runs (pinned), the update in progress, the last task error.
ALTER TABLE services ADD COLUMN replicas_running integer NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN image_digest text;
ALTER TABLE services ADD COLUMN update_state text;
ALTER TABLE services ADD COLUMN message text NOT NULL DEFAULT '';
-- [{target, published, protocol, mode}] as the engine reports them.
ALTER TABLE services ADD COLUMN ports jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE services ADD COLUMN observed_at timestamptz;

ALTER TABLE containers ADD COLUMN addresses text[] NOT NULL DEFAULT '{}';
ALTER TABLE containers ADD COLUMN exit_code integer;
ALTER TABLE containers ADD COLUMN error text NOT NULL DEFAULT '';
-- [{target, published, protocol}] the task got on its node (host-mode ports).
ALTER TABLE containers ADD COLUMN host_ports jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE containers ADD COLUMN started_at timestamptz;
CREATE INDEX containers_service_idx ON containers (service_id);
