-- Why a router at work keeps serving an older table: the last error of applying the newest one
-- (HAProxy refused the configuration, its Runtime API failed, …). Cleared when it applies a table, so
-- a router seen lately with an error is failing, one without is serving (`GET /api/v1/admin/routers`).
ALTER TABLE routers ADD COLUMN error text;
