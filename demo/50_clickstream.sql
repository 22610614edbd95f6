-- demo step 50: a generated click-stream, delivered the way producers do it.
--
-- :users shoppers (default 3000; psql -v users=N) visit a web shop over the
-- last 3 days: each has 1-6 sessions of page views, product views and, with
-- realistic drop-off, add_to_cart, checkout and purchase.  The events are
-- generated into the schema demo_gen first (the producers' outbox), then
-- delivered to the stream `clicks` by three producers:
--   * a Segment/RudderStack-style collector calling stream.ingest() with
--     /v1/batch bodies of 100 messages (page/track/identify, non-UUID
--     messageIds), one sessions in three;
--   * the shop's back end doing INSERT ... of 25 events per statement;
--   * a nightly export loaded with COPY.
-- and with the usual mess: 3% of events delivered out of order (up to 15
-- minutes after newer ones), whole batches and single events retried (the
-- same event again: dropped and counted as duplicates), a mobile app that
-- syncs hours late, and a replay of an old export with events from months
-- ago (they land in the default partition until the worker adopts them).
-- Completed orders also go, from the back end, to the stream shop.orders.
--
-- Later demo steps can use demo_gen.* (users, products, sessions, events)
-- and demo_gen.delivery_log (what was sent and accepted, per statement).

\if :{?users}
\else
\set users 3000
\endif
\if :{?workdir}
\else
\set workdir /tmp
\endif
\set copy_file :workdir '/demo_clicks_export.csv'
\set copy_retry_file :workdir '/demo_clicks_retry.csv'

\echo
\echo '== 50  click-stream:' :users 'shoppers over the last 3 days'

SET client_min_messages = warning;
SELECT setseed(0.2026) \g /dev/null

DROP SCHEMA IF EXISTS demo_gen CASCADE;
CREATE SCHEMA demo_gen;
COMMENT ON SCHEMA demo_gen IS 'demo: generated events before delivery, and the delivery log (not part of the extension)';

-- ----------------------------------------------------------- catalog, users
CREATE TABLE demo_gen.products AS
SELECT p AS product_no,
       'prod_' || lpad(p::text, 4, '0') AS product_id,
       'SKU-' || lpad((p * 7919 % 100000)::text, 5, '0') AS sku,
       (ARRAY['Trail', 'City', 'Classic', 'Urban', 'Nordic', 'Studio'])[1 + p % 6] || ' ' ||
       (ARRAY['Runner', 'Sneaker', 'Backpack', 'Jacket', 'Cap', 'Watch', 'Tee', 'Hoodie'])[1 + p % 8] AS name,
       (ARRAY['shoes', 'shoes', 'bags', 'jackets', 'hats', 'watches', 'shirts', 'shirts'])[1 + p % 8] AS category,
       round((9.90 + random() * 190)::numeric, 2) AS price
FROM generate_series(1, 200) AS p;

CREATE TABLE demo_gen.users AS
SELECT u AS user_no,
       'user_' || lpad(u::text, 5, '0') AS user_id,
       (ARRAY['en-US', 'en-GB', 'de-DE', 'fr-FR', 'nl-NL'])[1 + floor(random() * 5)::int] AS locale,
       (ARRAY['desktop', 'desktop', 'mobile', 'mobile', 'mobile', 'tablet'])[1 + floor(random() * 6)::int] AS device,
       (ARRAY['google', 'google', 'newsletter', 'facebook', 'direct', 'instagram'])[1 + floor(random() * 6)::int] AS source,
       1 + floor(random() * random() * 6)::int AS n_sessions,
       random() < 0.65 AS has_account,
       random() < 0.03 AS offline_app          -- a mobile app that syncs hours later
FROM generate_series(1, :users) AS u;

-- ------------------------------------------------------------------ sessions
CREATE TABLE demo_gen.sessions AS
SELECT x.session_no, x.user_no, x.user_id, x.locale, x.device, x.source, x.offline_app,
       'sess_' || lpad(x.session_no::text, 6, '0') AS session_id,
       md5('device-' || x.user_no || '-' || x.device) AS anonymous_id,
       x.has_account AND random() < 0.8 AS logged_in,
       CASE WHEN x.offline_app
            THEN now() - interval '2 hours' - random() * interval '8 hours'
            ELSE now() - interval '25 minutes' - (random() ^ 2) * interval '70 hours'
       END AS started_at,
       1 + floor(random() * 4)::int AS n_pages,
       CASE WHEN random() < 0.30 THEN 0 ELSE 1 + floor(random() * 4)::int END AS n_products,
       random() AS r_cart, random() AS r_checkout, random() AS r_purchase,
       1 + floor(random() * 200)::int AS product_no,
       CASE x.session_no % 3 WHEN 0 THEN 'ingest' WHEN 1 THEN 'insert' ELSE 'copy' END AS path
FROM (SELECT row_number() OVER (ORDER BY u.user_no, s) AS session_no, u.*
      FROM demo_gen.users AS u CROSS JOIN LATERAL generate_series(1, u.n_sessions) AS s) AS x;

-- ------------------------------------------------------------------- events
-- One row per event, with its step k in the session: pages, product views,
-- then add_to_cart (35% of sessions with a product view), checkout (55% of
-- those) and purchase (70% of those); occurred_at rises with k.
CREATE TABLE demo_gen.events AS
WITH steps AS (
    SELECT s.session_no, k, 'page_view' AS event_name, NULL::int AS product_no
    FROM demo_gen.sessions AS s, generate_series(1, s.n_pages) AS k
    UNION ALL
    SELECT s.session_no, s.n_pages + k, 'product_view', 1 + (s.product_no + (k - 1) * 37 - 1) % 200
    FROM demo_gen.sessions AS s, generate_series(1, s.n_products) AS k
    UNION ALL
    SELECT s.session_no, s.n_pages + s.n_products + 1, 'add_to_cart', s.product_no
    FROM demo_gen.sessions AS s WHERE s.n_products > 0 AND s.r_cart < 0.35
    UNION ALL
    SELECT s.session_no, s.n_pages + s.n_products + 2, 'checkout', s.product_no
    FROM demo_gen.sessions AS s WHERE s.n_products > 0 AND s.r_cart < 0.35 AND s.r_checkout < 0.55
    UNION ALL
    SELECT s.session_no, s.n_pages + s.n_products + 3, 'purchase', s.product_no
    FROM demo_gen.sessions AS s
    WHERE s.n_products > 0 AND s.r_cart < 0.35 AND s.r_checkout < 0.55 AND s.r_purchase < 0.70
), timed AS (
    SELECT st.*, s.started_at + st.k * interval '45 seconds' + random() * interval '30 seconds' AS occurred_at,
           1 + floor(random() * 3)::int AS quantity
    FROM steps AS st JOIN demo_gen.sessions AS s USING (session_no)
)
SELECT gen_random_uuid() AS event_id,
       t.event_name,
       t.occurred_at,
       CASE WHEN s.logged_in THEN s.user_id END AS user_id,
       s.anonymous_id,
       s.session_id,
       CASE t.event_name
         WHEN 'page_view' THEN
           jsonb_build_object(
             'path', CASE WHEN t.k = 1 THEN '/' ELSE '/c/' || (ARRAY['shoes', 'bags', 'jackets', 'hats', 'watches', 'shirts'])[1 + (s.session_no + t.k) % 6] END,
             'url', 'https://shop.example.com' || CASE WHEN t.k = 1 THEN '/' ELSE '/c/' || (ARRAY['shoes', 'bags', 'jackets', 'hats', 'watches', 'shirts'])[1 + (s.session_no + t.k) % 6] END,
             'title', CASE WHEN t.k = 1 THEN 'Example Shop' ELSE 'Example Shop - ' || initcap((ARRAY['shoes', 'bags', 'jackets', 'hats', 'watches', 'shirts'])[1 + (s.session_no + t.k) % 6]) END,
             'referrer', CASE WHEN t.k = 1 AND s.source = 'google' THEN 'https://www.google.com/' ELSE '' END)
         WHEN 'product_view' THEN
           jsonb_build_object('product_id', p.product_id, 'sku', p.sku, 'name', p.name,
                              'category', p.category, 'price', p.price, 'currency', 'EUR')
         WHEN 'add_to_cart' THEN
           jsonb_build_object('product_id', p.product_id, 'sku', p.sku, 'name', p.name,
                              'price', p.price, 'quantity', t.quantity, 'currency', 'EUR',
                              'cart_id', 'cart_' || s.session_no)
         WHEN 'checkout' THEN
           jsonb_build_object('cart_id', 'cart_' || s.session_no, 'value', p.price * t.quantity,
                              'currency', 'EUR', 'num_items', t.quantity)
         ELSE
           jsonb_build_object('order_id', 'ord_' || lpad(s.session_no::text, 6, '0'),
                              'revenue', p.price * t.quantity, 'currency', 'EUR',
                              'num_items', t.quantity,
                              'payment', (ARRAY['card', 'card', 'paypal', 'klarna'])[1 + s.session_no % 4])
       END AS properties,
       jsonb_build_object(
         'ip', '203.0.' || (s.user_no % 250) || '.' || (s.user_no * 7 % 250),
         'userAgent', CASE s.device
                        WHEN 'desktop' THEN 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36'
                        WHEN 'mobile' THEN 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148'
                        ELSE 'Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148' END,
         'locale', s.locale,
         'campaign', jsonb_build_object('source', s.source,
                                        'medium', CASE s.source WHEN 'google' THEN 'cpc' WHEN 'newsletter' THEN 'email'
                                                                WHEN 'direct' THEN 'none' ELSE 'social' END,
                                        'name', 'autumn_sale')) AS context,
       -- how it is delivered
       s.path,
       CASE WHEN s.offline_app THEN 'late' ELSE 'main' END AS phase,
       t.occurred_at + CASE WHEN random() < 0.03 THEN random() * interval '15 minutes'
                            ELSE interval '0' END AS deliver_key,
       random() < 0.01 AS retry,
       s.session_no, t.k, s.logged_in, s.user_id AS account_id
FROM timed AS t
JOIN demo_gen.sessions AS s USING (session_no)
LEFT JOIN demo_gen.products AS p ON p.product_no = t.product_no;

-- A replay of an old export: 24 events of two days, about 4 and 3 months ago,
-- in the export's legacy format: page views are fine, but product events
-- only carry {"path", "source"} (a tracking plan, if one is defined before
-- this step, quarantines them).
INSERT INTO demo_gen.events
SELECT gen_random_uuid(),
       (ARRAY['page_view', 'product_view', 'add_to_cart'])[1 + i % 3],
       date_trunc('day', now() - CASE WHEN i <= 12 THEN interval '125 days' ELSE interval '95 days' END)
           + random() * interval '20 hours',
       'user_' || lpad((1 + i * 97 % :users)::text, 5, '0'),
       md5('legacy-' || i), 'sess_legacy_' || (i / 4),
       jsonb_build_object('path', '/legacy/' || i, 'source', 'old_export'),
       jsonb_build_object('locale', 'en-US', 'import', 'crm_export_v1'),
       'insert', 'old', NULL, false, NULL, i, true, NULL
FROM generate_series(1, 24) AS i;

UPDATE demo_gen.events SET deliver_key = occurred_at WHERE deliver_key IS NULL;
ALTER TABLE demo_gen.events ADD COLUMN batch_no integer;
UPDATE demo_gen.events AS e SET batch_no = b.batch_no
FROM (SELECT event_id,
             (row_number() OVER (PARTITION BY path, phase ORDER BY deliver_key)- 1)
               / CASE path WHEN 'ingest' THEN 100 WHEN 'insert' THEN 25 ELSE 100000 END AS batch_no
      FROM demo_gen.events) AS b
WHERE b.event_id = e.event_id;
CREATE INDEX ON demo_gen.events (path, phase, batch_no);
ANALYZE demo_gen.events;

-- Segment messages for the events the collector sends: page views are
-- `page` calls, the rest `track` calls, plus an `identify` when a shopper
-- with an account logs in; messageIds as analytics.js makes them.
CREATE TABLE demo_gen.segment_messages AS
SELECT e.phase, e.batch_no, e.deliver_key,
       jsonb_strip_nulls(jsonb_build_object(
           'type', CASE WHEN e.event_name = 'page_view' THEN 'page' ELSE 'track' END,
           'event', CASE WHEN e.event_name <> 'page_view' THEN e.event_name END,
           'name', CASE WHEN e.event_name = 'page_view' THEN e.properties ->> 'title' END,
           'messageId', 'ajs-next-' || (extract(epoch FROM e.occurred_at) * 1000)::bigint || '-' || e.event_id,
           'timestamp', e.occurred_at,
           'sentAt', e.deliver_key + interval '2 seconds',
           'userId', e.user_id,
           'anonymousId', e.anonymous_id,
           'properties', e.properties,
           'context', e.context || jsonb_build_object('sessionId', e.session_id,
                                                      'library', jsonb_build_object('name', 'analytics.js', 'version', 'next-1.64.0')),
           'integrations', '{}'::jsonb,
           '_metadata', jsonb_build_object('bundled', jsonb_build_array('Segment.io')))) AS msg
FROM demo_gen.events AS e WHERE e.path = 'ingest'
UNION ALL
SELECT e.phase, e.batch_no, e.deliver_key - interval '1 millisecond',
       jsonb_build_object(
           'type', 'identify',
           'messageId', 'ajs-next-' || (extract(epoch FROM e.occurred_at) * 1000)::bigint || '-id-' || e.session_id,
           'timestamp', e.occurred_at - interval '1 second',
           'userId', e.user_id,
           'anonymousId', e.anonymous_id,
           'traits', jsonb_build_object('email', e.user_id || '@example.com', 'plan', 'member'),
           'context', jsonb_build_object('sessionId', e.session_id, 'locale', e.context ->> 'locale'))
FROM demo_gen.events AS e WHERE e.path = 'ingest' AND e.k = 1 AND e.logged_in AND e.phase = 'main';

CREATE TABLE demo_gen.delivery_log (
    logged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    phase     text NOT NULL,
    path      text NOT NULL,
    batch_no  integer,
    sent      bigint NOT NULL,
    accepted  bigint NOT NULL,
    retry     boolean NOT NULL DEFAULT false
);

\echo '   generated:'
SELECT path AS producer, phase, count(*) AS events, count(DISTINCT session_no) AS sessions,
       min(occurred_at)::timestamp(0) AS first_occurred, max(occurred_at)::timestamp(0) AS last_occurred
FROM demo_gen.events GROUP BY 1, 2
ORDER BY array_position(ARRAY['main', 'late', 'old'], phase), 1;

-- ------------------------------------------------------------------ delivery
-- Every statement below is its own transaction (psql autocommit), as it
-- would be for separate HTTP requests / back-end calls.
\echo '   delivering: stream.ingest batches, INSERTs, COPY ...'
SELECT clock_timestamp() AS delivery_started \gset

-- (1) the collector: one stream.ingest() call per /v1/batch body of 100
SELECT format($q$INSERT INTO demo_gen.delivery_log (phase, path, batch_no, sent, accepted)
                 SELECT 'main', 'ingest', %s, %s, i.accepted FROM stream.ingest('clicks', %L) AS i$q$,
              batch_no, count(*), jsonb_agg(msg ORDER BY deliver_key))
FROM demo_gen.segment_messages WHERE phase = 'main'
GROUP BY batch_no ORDER BY batch_no
\gexec

-- (2) the back end: INSERT of 25 events per statement
SELECT format($q$WITH ins AS (
                   INSERT INTO clicks (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
                   SELECT event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context
                   FROM demo_gen.events WHERE path = 'insert' AND phase = 'main' AND batch_no = %s
                   ORDER BY deliver_key RETURNING 1)
                 INSERT INTO demo_gen.delivery_log (phase, path, batch_no, sent, accepted)
                 SELECT 'main', 'insert', %s, %s, count(*) FROM ins$q$, batch_no, batch_no, count(*))
FROM demo_gen.events WHERE path = 'insert' AND phase = 'main'
GROUP BY batch_no ORDER BY batch_no
\gexec

-- (3) the export: one COPY of a CSV file
COPY (SELECT event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context
      FROM demo_gen.events WHERE path = 'copy' AND phase = 'main' ORDER BY deliver_key)
  TO :'copy_file' WITH (FORMAT csv);
SELECT count(*) AS before FROM clicks \gset
COPY clicks (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
  FROM :'copy_file' WITH (FORMAT csv);
INSERT INTO demo_gen.delivery_log (phase, path, batch_no, sent, accepted)
SELECT 'main', 'copy', 0, (SELECT count(*) FROM demo_gen.events WHERE path = 'copy' AND phase = 'main'),
       (SELECT count(*) FROM clicks) - :before;

-- (4) retries: the collector re-sends 5% of its batches after a timeout,
-- the back end and the export re-send 1% of their events.
SELECT format($q$INSERT INTO demo_gen.delivery_log (phase, path, batch_no, sent, accepted, retry)
                 SELECT 'main', 'ingest', %s, %s, i.accepted, true FROM stream.ingest('clicks', %L) AS i$q$,
              batch_no, count(*), jsonb_agg(msg ORDER BY deliver_key))
FROM demo_gen.segment_messages WHERE phase = 'main' AND batch_no % 20 = 7
GROUP BY batch_no ORDER BY batch_no
\gexec
WITH ins AS (
    INSERT INTO clicks (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
    SELECT event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context
    FROM demo_gen.events WHERE path = 'insert' AND phase = 'main' AND retry
    RETURNING 1)
INSERT INTO demo_gen.delivery_log (phase, path, sent, accepted, retry)
SELECT 'main', 'insert', (SELECT count(*) FROM demo_gen.events WHERE path = 'insert' AND phase = 'main' AND retry),
       count(*), true FROM ins;
COPY (SELECT event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context
      FROM demo_gen.events WHERE path = 'copy' AND phase = 'main' AND retry)
  TO :'copy_retry_file' WITH (FORMAT csv);
SELECT count(*) AS before FROM clicks \gset
COPY clicks (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
  FROM :'copy_retry_file' WITH (FORMAT csv);
INSERT INTO demo_gen.delivery_log (phase, path, batch_no, sent, accepted, retry)
SELECT 'main', 'copy', 1, (SELECT count(*) FROM demo_gen.events WHERE path = 'copy' AND phase = 'main' AND retry),
       (SELECT count(*) FROM clicks) - :before, true;

-- (5) the shop's back end records completed orders in shop.orders (one
-- order is sent twice: a retry after a lost acknowledgement).
WITH orders AS (
    SELECT e.event_id, e.occurred_at, e.account_id, e.anonymous_id, e.session_id,
           e.properties, e.context
    FROM demo_gen.events AS e WHERE e.event_name = 'purchase'
), ins AS (
    INSERT INTO shop.orders (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
    SELECT stream.uuid_v7(), 'order_completed', o.occurred_at, o.account_id, o.anonymous_id, o.session_id,
           o.properties || jsonb_build_object('shipping', 4.95, 'tax', round((o.properties ->> 'revenue')::numeric * 0.19, 2)),
           jsonb_build_object('source', 'checkout-service', 'ip', o.context ->> 'ip')
    FROM orders AS o
    RETURNING 1)
INSERT INTO demo_gen.delivery_log (phase, path, sent, accepted)
SELECT 'orders', 'insert', (SELECT count(*) FROM demo_gen.events WHERE event_name = 'purchase'), count(*) FROM ins;
WITH ins AS (
    INSERT INTO shop.orders (event_id, event_name, occurred_at, user_id, properties)
    SELECT event_id, event_name, occurred_at, user_id, properties FROM shop.orders ORDER BY occurred_at DESC LIMIT 1
    RETURNING 1)
INSERT INTO demo_gen.delivery_log (phase, path, sent, accepted, retry)
SELECT 'orders', 'insert', 1, count(*), true FROM ins;

-- (6) a mobile app comes back online and syncs its sessions, hours late
SELECT format($q$INSERT INTO demo_gen.delivery_log (phase, path, batch_no, sent, accepted)
                 SELECT 'late', 'ingest', %s, %s, i.accepted FROM stream.ingest('clicks', %L) AS i$q$,
              batch_no, count(*), jsonb_agg(msg ORDER BY deliver_key))
FROM demo_gen.segment_messages WHERE phase = 'late'
GROUP BY batch_no ORDER BY batch_no
\gexec
WITH ins AS (
    INSERT INTO clicks (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
    SELECT event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context
    FROM demo_gen.events WHERE path IN ('insert', 'copy') AND phase = 'late'
    ORDER BY deliver_key RETURNING 1)
INSERT INTO demo_gen.delivery_log (phase, path, sent, accepted)
SELECT 'late', 'insert', (SELECT count(*) FROM demo_gen.events WHERE path IN ('insert', 'copy') AND phase = 'late'),
       count(*) FROM ins;

-- (7) someone replays an old CRM export: events from months ago
WITH ins AS (
    INSERT INTO clicks (event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context)
    SELECT event_id, event_name, occurred_at, user_id, anonymous_id, session_id, properties, context
    FROM demo_gen.events WHERE phase = 'old' ORDER BY deliver_key RETURNING 1)
INSERT INTO demo_gen.delivery_log (phase, path, sent, accepted)
SELECT 'old', 'insert', (SELECT count(*) FROM demo_gen.events WHERE phase = 'old'), count(*) FROM ins;
\echo '   no partition exists for the months-old events: right after the replay they are in'
SELECT tableoid::regclass AS partition, count(*) AS events
FROM clicks WHERE occurred_at < now() - interval '30 days' GROUP BY 1;

\echo '   delivered (sent = messages/rows sent, accepted = stored in the stream):'
SELECT phase, path AS producer, count(*) AS statements, sum(sent) AS sent, sum(accepted) AS accepted,
       sum(sent) - sum(accepted) AS not_stored,
       min(logged_at)::time(0) AS first_at, max(logged_at)::time(0) AS last_at
FROM demo_gen.delivery_log
GROUP BY 1, 2 ORDER BY min(logged_at);

-- What was not stored: retries, dropped as duplicates, and events a data
-- contract quarantined (when a later step defines contracts).
CREATE FUNCTION demo_gen.count_since(rel regclass, ts_column text, since timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n bigint;
BEGIN
    IF rel IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE %I >= $1', rel, ts_column) INTO n USING since;
    RETURN n;
END $$;
\echo '   not stored, by reason:'
SELECT s.stream,
       (SELECT sum(sent) - sum(accepted) FROM demo_gen.delivery_log
        WHERE (phase = 'orders') = (s.stream::regclass = 'shop.orders'::regclass)) AS not_stored,
       s.duplicates AS dropped_as_duplicates,
       demo_gen.count_since(to_regclass(s.stream::text || '_quarantine'), 'quarantined_at', :'delivery_started') AS quarantined
FROM stream.stats AS s ORDER BY 1;
RESET client_min_messages;
