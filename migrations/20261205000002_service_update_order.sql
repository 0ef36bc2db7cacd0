-- How the engine replaces a service's tasks in an update, as observed: `start-first` (the new task
-- starts before the old one stops) or `stop-first` (Swarm's default). Berth gives routed stateless
-- services start-first unless the Compose file declares an order; this shows which one they got.
ALTER TABLE services ADD COLUMN update_order text;
