-- demo step 70: continuous aggregates over clicks.  Created after the load,
-- so the worker first backfills them from the stream, then keeps them up to
-- date from the WAL (logical decoding), exactly once.
\echo
\echo '== 70  continuous aggregates: revenue per minute and the funnel per hour'

\echo '   SELECT stream.create_aggregate(''revenue_per_minute'', $$'
\echo '     SELECT stream.tumble(occurred_at, ''1 minute'') AS minute, count(*) AS purchases,'
\echo '            sum((properties->>''revenue'')::numeric) AS revenue, max(occurred_at) AS last_purchase'
\echo '     FROM clicks WHERE event_name = ''purchase'' GROUP BY 1 $$);'
SELECT stream.create_aggregate('revenue_per_minute', $$
  SELECT stream.tumble(occurred_at, '1 minute') AS minute, count(*) AS purchases,
         sum((properties->>'revenue')::numeric) AS revenue, max(occurred_at) AS last_purchase
  FROM clicks WHERE event_name = 'purchase' GROUP BY 1 $$) \g /dev/null

\echo '   SELECT stream.create_aggregate(''funnel_per_hour'', $$'
\echo '     SELECT stream.tumble(occurred_at, ''1 hour'') AS hour, event_name,'
\echo '            count(*) AS events, count(user_id) AS identified'
\echo '     FROM clicks GROUP BY 1, 2 $$);'
SELECT stream.create_aggregate('funnel_per_hour', $$
  SELECT stream.tumble(occurred_at, '1 hour') AS hour, event_name,
         count(*) AS events, count(user_id) AS identified
  FROM clicks GROUP BY 1, 2 $$) \g /dev/null

\echo '   SELECT stream.flush(timeout => ''60 s'');   -- wait for the backfill'
SELECT stream.flush(timeout => '60 s') \g /dev/null

\echo '-- the last five minutes with purchases (a view over the partial states):'
SELECT minute, purchases, revenue FROM revenue_per_minute ORDER BY minute DESC LIMIT 5;

\echo '-- the funnel over the whole load, from funnel_per_hour, next to the same count on the raw events:'
SELECT f.event_name, sum(f.events) AS events, sum(f.identified) AS identified,
       (SELECT count(*) FROM clicks c WHERE c.event_name = f.event_name) AS raw_count
FROM funnel_per_hour f GROUP BY 1
ORDER BY array_position(ARRAY['page_view', 'product_view', 'add_to_cart', 'checkout', 'purchase'], f.event_name);

-- New events: copies of the latest purchase (fresh event_id), two now and
-- one late, stamped in the last minute with purchases at least two hours
-- ago: it updates that old window.
SELECT event_id AS src_event, stream.tumble(now(), '1 minute') AS now_minute,
       (properties->>'revenue')::numeric AS price
FROM clicks WHERE event_name = 'purchase' ORDER BY occurred_at DESC LIMIT 1 \gset
SELECT minute AS late_minute, purchases AS late_before FROM revenue_per_minute
WHERE minute < now() - interval '2 hours' ORDER BY minute DESC LIMIT 1 \gset

\echo
\echo '-- three more purchases of' :price 'EUR arrive: two now, one late (occurred_at in the minute of' :late_minute '):'
INSERT INTO clicks (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
SELECT gen_random_uuid(), event_name, t, user_id, anonymous_id, session_id, properties, context
FROM clicks, unnest(ARRAY[now(), now(), timestamptz :'late_minute' + interval '30 seconds']) AS t
WHERE event_id = :'src_event';

\echo '   SELECT stream.flush(''revenue_per_minute'');   -- read-your-writes'
SELECT stream.flush('revenue_per_minute') \g /dev/null
SELECT stream.flush('funnel_per_hour') \g /dev/null

\echo '-- the current minute and the late event''s minute (purchases there before:' :late_before '):'
SELECT minute, purchases, revenue, last_purchase FROM revenue_per_minute
WHERE minute IN (:'now_minute', :'late_minute') ORDER BY minute;

\echo '-- purchases per hour since the late event''s hour (funnel_per_hour):'
SELECT hour, events AS purchases FROM funnel_per_hour
WHERE event_name = 'purchase' AND hour >= stream.tumble(:'late_minute', '1 hour')
ORDER BY hour;

\echo '-- SELECT * FROM stream.aggregates:'
SELECT name, stream, state, applied_lsn, lag_bytes, events_applied, events_backfilled,
       round(apply_rate::numeric) AS apply_rate
FROM stream.aggregates ORDER BY name::text;
