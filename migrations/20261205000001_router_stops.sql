-- When a router last stopped because it was asked to (SIGTERM, `berth serve` shutting down), until it
-- reports again. A stopped router is listed as `stopped`, not `gone` (gone is for one that vanished
-- without a word), and no job waits for it to catch up.
ALTER TABLE routers ADD COLUMN stopped_at timestamptz;
