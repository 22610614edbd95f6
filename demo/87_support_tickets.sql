-- demo step 87: an operational table captured as a stream (docs/capture.md).
-- Support agents work in an ordinary table, support_tickets, with plain
-- INSERT and UPDATE; stream.capture turns every committed change into an
-- event of the stream support_events, and two activations pause promotional
-- messaging for a customer while a ticket of theirs is open: "pause" when a
-- ticket is opened, "resume" when it is resolved (scripts/demo.sh then shows
-- it live through stream_listen).  A continuous aggregate keeps the open
-- tickets per customer: what a mailer checks before it sends a promotion.
\echo
\echo '== 87  support tickets: an ordinary table captured as a stream'
\echo '   CREATE TABLE support_tickets (id int PRIMARY KEY, user_id text, subject text, status text ...);'
\echo '   SELECT stream.capture(''support_tickets'', stream => ''support_events'', user_id => ''user_id'');'
SELECT stream.create_stream('support_events') \g /dev/null
CREATE TABLE support_tickets (
    id         int PRIMARY KEY,
    user_id    text NOT NULL,
    subject    text NOT NULL,
    status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'resolved')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- the old row in the WAL too: events of updates name the changed columns
ALTER TABLE support_tickets REPLICA IDENTITY FULL;
SELECT stream.capture('support_tickets', stream => 'support_events', user_id => 'user_id') \g /dev/null

\echo '   SELECT stream.on_event(''promo_pause'', ''support_events'', $$event_name = ''support_tickets.insert''$$, channel => ''promotions'', ...);'
\echo '   SELECT stream.on_event(''promo_resume'', ''support_events'','
\echo '          $$event_name = ''support_tickets.update'' AND properties->>''status'' = ''resolved'' AND context->''changed'' ? ''status''$$, ...);'
SELECT stream.on_event('promo_pause', 'support_events',
    $$event_name = 'support_tickets.insert' AND properties->>'status' = 'open'$$,
    channel => 'promotions', key => 'user_id',
    payload => $$jsonb_build_object('action', 'pause promotions', 'user', user_id,
                                    'ticket', properties->'id', 'subject', properties->>'subject')$$) \g /dev/null
SELECT stream.on_event('promo_resume', 'support_events',
    $$event_name = 'support_tickets.update' AND properties->>'status' = 'resolved' AND context->'changed' ? 'status'$$,
    channel => 'promotions', key => 'user_id',
    payload => $$jsonb_build_object('action', 'resume promotions', 'user', user_id, 'ticket', properties->'id')$$) \g /dev/null
SELECT stream.create_aggregate('open_tickets', $$
    SELECT user_id,
           sum(CASE WHEN event_name = 'support_tickets.insert' AND properties->>'status' <> 'resolved' THEN 1
                    WHEN event_name = 'support_tickets.update' AND context->'changed' ? 'status'
                         AND properties->>'status' = 'resolved' THEN -1
                    ELSE 0 END) AS open_tickets,
           max(occurred_at) AS last_change
    FROM support_events GROUP BY user_id $$) \g /dev/null

-- waits until every change committed so far is an event and folded
CREATE FUNCTION demo_gen.capture_caught_up() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    target pg_lsn := stream._aggregate_wake(true);
BEGIN
    FOR i IN 1 .. 600 LOOP
        EXIT WHEN (SELECT bool_and(applied_lsn >= target) FROM stream.captures);
        PERFORM pg_sleep(0.1);
    END LOOP;
    PERFORM stream.flush(NULL, '60 s');
END $$;
SELECT demo_gen.capture_caught_up() \g /dev/null

\echo '-- agents work in plain SQL:'
\echo '   INSERT INTO support_tickets VALUES (1, ''u_0042'', ''parcel lost''), (2, ''u_0007'', ''refund''), (3, ''u_0042'', ''wrong size'');'
\echo '   UPDATE support_tickets SET status = ''pending'' WHERE id = 1;'
\echo '   UPDATE support_tickets SET status = ''resolved'' WHERE id IN (2, 3);'
INSERT INTO support_tickets (id, user_id, subject) VALUES
    (1, 'u_0042', 'parcel lost'), (2, 'u_0007', 'refund not received'), (3, 'u_0042', 'wrong size');
UPDATE support_tickets SET status = 'pending', updated_at = now() WHERE id = 1;
UPDATE support_tickets SET status = 'resolved', updated_at = now() WHERE id IN (2, 3);
SELECT demo_gen.capture_caught_up() \g /dev/null

\echo '-- the captured events (SELECT ... FROM support_events):'
SELECT event_name, user_id, properties->>'id' AS ticket, properties->>'status' AS status,
       context->'changed' AS changed, occurred_at::timestamp(3)
FROM support_events ORDER BY split_part(context->>'position', '/', 1)::bigint, (properties->>'id')::int;
\echo '-- the promotions channel: pause while a ticket is open, resume when it is resolved'
SELECT activation, key AS user_id, payload->>'action' AS action, payload->>'ticket' AS ticket
FROM stream.activations WHERE channel = 'promotions' ORDER BY id;
\echo '-- who may get promotions now (the open_tickets aggregate: u_0042 still has ticket 1 open):'
SELECT user_id, open_tickets, CASE WHEN open_tickets > 0 THEN 'paused' ELSE 'ok' END AS promotions
FROM open_tickets ORDER BY user_id;
\echo '-- the capture (SELECT * FROM stream.captures):'
SELECT source, stream, captured, quarantined, status, applied_at::timestamp(0) FROM stream.captures;
