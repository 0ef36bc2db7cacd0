-- Throttling of credential guessing (login, token refresh, and later the registry's token endpoint).
--
-- One row per throttled key: an account at an address (`pair:<email>|<addr>`), an address on its own
-- (`addr:<kind>:<addr>`), or an account from everywhere (`account:<email>`). Failures inside the window
-- count up; past a key's free allowance each further failure locks the key for a growing time. Rows are
-- small and few (one per guesser), and a success removes its pair's row. Kept in the database rather
-- than in memory so every Berth process sees the same counts.
CREATE TABLE auth_throttle (
    key              text PRIMARY KEY,
    failures         integer NOT NULL CHECK (failures >= 0),
    last_failure_at  timestamptz NOT NULL,
    locked_until     timestamptz
);
