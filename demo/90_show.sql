-- demo step 90: what the extension did with the click-stream.
\echo
\echo '== 90  what stream_events did'

\echo
\echo '-- the streams (SELECT * FROM stream.stream_list):'
SELECT stream, partition_interval, retention, dedup_window, partitions, created_at::timestamp(0)
FROM stream.stream_list ORDER BY 1;

\echo '-- partitions of clicks around today (the worker keeps some behind and ahead of now):'
SELECT c.relname AS partition,
       CASE WHEN pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' THEN 'DEFAULT'
            ELSE substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']*)''\)') || ' .. ' ||
                 substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']*)''\)') END AS range,
       demo_gen.row_count(c.oid) AS events
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'clicks'::regclass
ORDER BY pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.relname;

\echo '-- ingest counters (SELECT * FROM stream.stats): retries were dropped and counted'
SELECT stream, events, duplicates, duplicate_rate, events_per_second,
       last_occurred_at::timestamp(0), date_trunc('millisecond', freshness) AS freshness
FROM stream.stats ORDER BY 1;

\echo '-- the stored events, by name (Segment page calls are stored as event_name ''page''):'
SELECT event_name, count(*) AS events, count(DISTINCT session_id) AS sessions,
       count(*) FILTER (WHERE user_id IS NULL) AS anonymous
FROM clicks GROUP BY 1 ORDER BY 2 DESC;

\echo '-- a Segment message as stored (messageId was not a UUID: event_id is derived from it, the original kept in context):'
\x on
SELECT event_id, event_name, occurred_at, received_at, user_id, anonymous_id, session_id,
       properties, context - 'segment' - 'userAgent' AS context, context -> 'segment' AS "context->segment"
FROM clicks WHERE context ? 'segment' AND event_name = 'add_to_cart'
ORDER BY occurred_at DESC LIMIT 1;
\x off

\echo '-- arrival: how late events were received, by delivery (received_at is always the server''s)'
SELECT CASE WHEN occurred_at < now() - interval '30 days' THEN 'months-old replay'
            WHEN received_at > (SELECT max(logged_at) FROM demo_gen.delivery_log WHERE phase = 'main')
                 THEN 'offline app synced late'
            ELSE 'history and live traffic' END AS delivery,
       count(*) AS events,
       justify_hours(date_trunc('minute', min(received_at - occurred_at))) AS min_lateness,
       justify_hours(date_trunc('minute', max(received_at - occurred_at))) AS max_lateness
FROM clicks GROUP BY 1 ORDER BY 3 DESC;

\echo '-- the funnel, over the raw events of the last 3 days (per session, steps in event-time order):'
WITH s AS (
    SELECT session_id,
           min(occurred_at) FILTER (WHERE event_name IN ('page_view', 'page')) AS t1,
           min(occurred_at) FILTER (WHERE event_name = 'product_view') AS t2,
           min(occurred_at) FILTER (WHERE event_name = 'add_to_cart') AS t3,
           min(occurred_at) FILTER (WHERE event_name = 'checkout') AS t4,
           min(occurred_at) FILTER (WHERE event_name = 'purchase') AS t5
    FROM clicks
    WHERE occurred_at > now() - interval '3 days' AND session_id IS NOT NULL
    GROUP BY session_id
), f AS (
    SELECT count(t1) AS n1,
           count(*) FILTER (WHERE t2 >= t1) AS n2,
           count(*) FILTER (WHERE t3 >= t2 AND t2 >= t1) AS n3,
           count(*) FILTER (WHERE t4 >= t3 AND t3 >= t2 AND t2 >= t1) AS n4,
           count(*) FILTER (WHERE t5 >= t4 AND t4 >= t3 AND t3 >= t2 AND t2 >= t1) AS n5
    FROM s
)
SELECT step, sessions,
       round(100.0 * sessions / nullif(lag(sessions) OVER (ORDER BY n), 0), 1) AS pct_of_previous,
       round(100.0 * sessions / nullif(first_value(sessions) OVER (ORDER BY n), 0), 1) AS pct_of_visits
FROM f, LATERAL (VALUES (1, '1 visit', n1), (2, '2 product view', n2), (3, '3 add to cart', n3),
                        (4, '4 checkout', n4), (5, '5 purchase', n5)) AS v(n, step, sessions)
ORDER BY n;

\echo '-- revenue per day: purchases in clicks against shop.orders (two streams, same truth):'
SELECT d.day, d.purchases, d.revenue, o.orders, o.order_revenue
FROM (SELECT date_trunc('day', occurred_at)::date AS day, count(*) AS purchases,
             sum((properties ->> 'revenue')::numeric) AS revenue
      FROM clicks WHERE event_name = 'purchase' GROUP BY 1) AS d
FULL JOIN (SELECT date_trunc('day', occurred_at)::date AS day, count(*) AS orders,
                  sum((properties ->> 'revenue')::numeric) AS order_revenue
           FROM shop.orders GROUP BY 1) AS o USING (day)
ORDER BY 1;

\echo '-- the background workers (SELECT * FROM stream.worker_status()):'
SELECT datname, pid, state, started_at::timestamp(0), last_run_at::timestamp(0), runs, last_error
FROM stream.worker_status();

-- ---------------------------------------------------------------- proofs
\echo
\echo '-- dedup: a producer sends the same event twice (a retry); the second INSERT stores nothing'
SELECT duplicates AS duplicates_before FROM stream.stats WHERE stream = 'clicks' \gset
\set QUIET off
INSERT INTO clicks (event_id, event_name, user_id, session_id, properties)
VALUES ('01936b2e-7c3f-7a10-8d4e-5f1a2b3c4d5e', 'add_to_cart', 'user_00042', 'sess_demo',
        '{"product_id": "prod_0042", "sku": "SKU-32598", "price": 59.90, "quantity": 1, "currency": "EUR", "cart_id": "cart_demo"}');
INSERT INTO clicks (event_id, event_name, user_id, session_id, properties)
VALUES ('01936b2e-7c3f-7a10-8d4e-5f1a2b3c4d5e', 'add_to_cart', 'user_00042', 'sess_demo',
        '{"product_id": "prod_0042", "sku": "SKU-32598", "price": 59.90, "quantity": 1, "currency": "EUR", "cart_id": "cart_demo"}');
\set QUIET on
SELECT count(*) AS stored_copies,
       (SELECT duplicates FROM stream.stats WHERE stream = 'clicks') - :duplicates_before AS duplicates_counted
FROM clicks WHERE event_id = '01936b2e-7c3f-7a10-8d4e-5f1a2b3c4d5e';

\echo
\echo '-- append-only: events cannot be changed or deleted (these three statements fail on purpose)'
\set ON_ERROR_STOP 0
\set VERBOSITY default
UPDATE clicks SET properties = properties || '{"price": 0}' WHERE event_id = '01936b2e-7c3f-7a10-8d4e-5f1a2b3c4d5e';
DELETE FROM clicks WHERE user_id = 'user_00042';
TRUNCATE clicks;
\set ON_ERROR_STOP 1
SELECT count(*) AS events_still_there FROM clicks;
