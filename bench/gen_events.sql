-- Generates :rows click events into the CSV file :'file' (server-side COPY),
-- in the column order of bench/ingest.sh's COPY column list:
--   event_id, event_name, occurred_at, user_id, anonymous_id, session_id,
--   properties, context
-- (received_at is left to the table: the server sets it).
--
-- Shape: a random v4 event_id (what Segment/RudderStack SDKs send; with
-- -v uuid=v7 a time-ordered stream.uuid_v7() instead), a funnel
-- mix (55% page_view, 25% product_view, 12% add_to_cart, 5% checkout, 3%
-- purchase), occurred_at rising over the last 2 days in file order with
-- jitter (about 5% of the events are minutes to hours out of order), 30% of
-- events anonymous (user_id NULL), properties with ~5 fields and context with
-- ~4 fields.  Run with:  psql -v rows=1000000 -v file=/path/events.csv -f ...

\set ON_ERROR_STOP 1
\if :{?uuid}
\else
\set uuid v4
\endif
SELECT setseed(0.42);

COPY (
    WITH g AS (
        SELECT i,
               random() AS r_name,
               random() AS r_late,
               random() AS r_anon,
               1 + floor(random() * 50000)::int AS u,
               1 + floor(random() * 2000)::int AS p
        FROM generate_series(1, :rows) AS i
    ), e AS (
        SELECT g.*,
               CASE WHEN r_name < 0.55 THEN 'page_view'
                    WHEN r_name < 0.80 THEN 'product_view'
                    WHEN r_name < 0.92 THEN 'add_to_cart'
                    WHEN r_name < 0.97 THEN 'checkout'
                    ELSE 'purchase' END AS event_name,
               least(now() - interval '1 second',
                     now() - interval '2 days'
                     + (i::float8 / :rows) * interval '2 days'
                     + random() * interval '2 seconds'
                     - CASE WHEN r_late < 0.04 THEN random() * interval '20 minutes'
                            WHEN r_late < 0.05 THEN random() * interval '6 hours'
                            ELSE interval '0' END) AS occurred_at,
               round((5 + random() * 195)::numeric, 2) AS price
        FROM g
    )
    SELECT CASE WHEN :'uuid' = 'v7' THEN stream.uuid_v7() ELSE gen_random_uuid() END AS event_id,
           event_name,
           occurred_at,
           CASE WHEN r_anon < 0.30 THEN NULL ELSE 'user_' || u END AS user_id,
           md5('anon' || u) AS anonymous_id,
           's_' || u || '_' || (extract(epoch FROM occurred_at)::bigint / 1800) AS session_id,
           CASE WHEN event_name = 'page_view' THEN
                jsonb_build_object('path', '/c/' || (p % 40),
                                   'url', 'https://shop.example.com/c/' || (p % 40),
                                   'title', 'Category ' || (p % 40),
                                   'referrer', CASE WHEN p % 3 = 0 THEN 'https://www.google.com/' ELSE '' END,
                                   'search', '')
           ELSE
                jsonb_build_object('product_id', 'prod_' || p,
                                   'sku', 'SKU-' || lpad(p::text, 6, '0'),
                                   'category', (ARRAY['shoes','shirts','bags','hats','watches'])[1 + p % 5],
                                   'price', price,
                                   'currency', 'EUR',
                                   'quantity', 1 + (p % 3))
           END AS properties,
           jsonb_build_object('ip', '10.' || (u % 256) || '.' || (p % 256) || '.' || (u % 97),
                              'user_agent', (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36',
                                                   'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148',
                                                   'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 Version/17.1 Safari/605.1.15'])[1 + u % 3],
                              'locale', (ARRAY['en-US','de-DE','fr-FR','en-GB'])[1 + u % 4],
                              'campaign', jsonb_build_object('source', (ARRAY['google','newsletter','facebook','direct'])[1 + p % 4],
                                                             'medium', 'cpc')) AS context
    FROM e
) TO :'file' WITH (FORMAT csv);
