-- Event fan-out: every new event is announced on the `berth_events` channel as `<tenant_id>:<event id>`
-- (tenant part empty for platform events). Each Berth process LISTENs once and hands new events to all
-- of its open event streams, instead of every stream polling the table. A trigger, so that no path that
-- writes an event can forget to announce it; NOTIFY is delivered only when the transaction commits.
CREATE FUNCTION berth_announce_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_events', coalesce(NEW.tenant_id::text, '') || ':' || NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_announce AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION berth_announce_event();
